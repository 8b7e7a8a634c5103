"""The audio half of the lip-sync pair: log-mel → one embedding per video frame, in the space of the lip
encoder's (`engines/faces/lip_encoder.py`), so the cosine of a face's lips and the audio says whether this
face is the one speaking. Learned with the lip encoder (`lab/real_faces/train_sync.py`, SyncNet-style).

Its input is its own log-mel (40 bands, log10, floor 1e-8) of the same STFT frames the live stft node
computes (512 / 160 / 400 Hann, `engines.dsp`), so `sync_logmel` turns the node's spectrum into it. The
network looks ``MARGIN`` mel frames (0.2 s) both ways, so the embedding of video frame t is ready once
0.2 s of audio after it has been heard: a speaking-face decision lags the audio by that much.

Tensors: logmel (B, 4T + 2·MARGIN, 40) → embedding (B, T, 64), one per 40 ms video frame; each window
has its per-band mean removed inside the network (level and microphone colour cancel), so a live caller
runs it on a sliding window of the same length as training's (``WINDOW_FRAMES`` video frames).
"""

from __future__ import annotations

import numpy as np

from engines.dsp import StftConfig, mel_filterbank

N_MELS = 40
MEL_PER_FRAME = 4  # 10 ms mel frames per 40 ms video frame (25 fps)
MARGIN = 20  # mel frames of context on each side of the frames embedded (0.2 s)
WINDOW_FRAMES = 25  # video frames per window in training (1 s)
FLOOR = 1e-8
STFT = StftConfig()

_FILTERBANK = mel_filterbank(STFT.sample_rate_hz, STFT.n_fft, N_MELS).astype(np.float32)


def sync_logmel(spectrum: np.ndarray) -> np.ndarray:
    """(T, 257) complex STFT frames → (T, 40) float32 log10 mel power, as training computed it."""
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    return np.log10(np.maximum(power @ _FILTERBANK.T, FLOOR)).astype(np.float32)


def build(out_dim: int = 64, width: int = 128, freq_mask: int = 0, dropout: float = 0.0):
    """The torch module (imported lazily: the runtime runs the ONNX export and never needs torch)."""
    import torch
    from torch import nn

    class AudioSyncEncoder(nn.Module):
        """Log-mel (B, 4T + 2·MARGIN, N_MELS) → (B, T, E) per video frame; looks ~0.15 s both ways."""

        def __init__(self) -> None:
            super().__init__()
            self.freq_mask = freq_mask
            self.net = nn.Sequential(
                nn.Conv1d(N_MELS, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, MEL_PER_FRAME, stride=MEL_PER_FRAME), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(),
                nn.Conv1d(width, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(),
            )
            self.drop = nn.Dropout(dropout)
            self.out = nn.Linear(width, out_dim)

        def forward(self, mel: torch.Tensor) -> torch.Tensor:
            x = mel - mel.mean(dim=1, keepdim=True)  # per-window, per-band mean removed
            if self.training and self.freq_mask:  # SpecAugment-style: hide a random band of up to freq_mask mels
                b = x.shape[0]
                w = torch.randint(0, self.freq_mask + 1, (b, 1, 1))
                low = torch.randint(0, N_MELS, (b, 1, 1))
                band = torch.arange(N_MELS).view(1, 1, -1)
                x = x.masked_fill((band >= low) & (band < low + w), 0.0)
            y = self.net(x.transpose(1, 2))  # (B, W, T + 2·MARGIN/4)
            cut = MARGIN // MEL_PER_FRAME
            return self.out(self.drop(y[:, :, cut:y.shape[2] - cut].transpose(1, 2)))

    return AudioSyncEncoder()


def shipped():
    """The shipped audio encoder (``engines/weights/sync_audio.pt``), for the model registry's export."""
    import torch

    from engines.models import WEIGHTS_DIR

    path = WEIGHTS_DIR / "sync_audio.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it with `python -m lab.real_faces.train_sync`")
    model = build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
