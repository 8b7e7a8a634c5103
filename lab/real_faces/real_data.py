"""The cached real face tracks (`face_tracks.py`) as training material: clips with their identity,
lip inputs (lip vector + presence flag), mouth crops, audio and log-mel at 100 frames/s."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.faces.sync_audio_encoder import MEL_PER_FRAME, N_MELS  # noqa: F401 (re-exported)
from lab.real_faces.face_tracks import CACHE_DIR, clips_of, load_group

VIDEO_HOP = 640  # samples per video frame at 25 fps and 16 kHz


@dataclass
class RealClip:
    identity: str
    name: str
    crops: np.ndarray  # (T, 32, 48) uint8
    lips: np.ndarray  # (T, 84) float32: lip vector + presence
    present: np.ndarray  # (T,) bool
    audio: np.ndarray  # (T * 640,) float32
    mel: np.ndarray | None = None  # (4T, N_MELS) float32 log-mel

    @property
    def frames(self) -> int:
        return len(self.present)


def log_mel(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(N,) 16 kHz → (4 · n_frames, N_MELS): window 400 / hop 160 / n_fft 512 as `engines.dsp`; mel frame j
    spans samples [160 j, 160 j + 400), so frames 4t..4t+3 start inside video frame t."""
    import torch

    from engines.dsp import mel_filterbank

    need = (MEL_PER_FRAME * n_frames - 1) * 160 + 400
    x = torch.from_numpy(np.pad(audio, (0, max(0, need - len(audio))))[:need].astype(np.float32))
    spec = torch.stft(x, 512, 160, 400, torch.hann_window(400), center=False, return_complex=True).abs().pow(2)
    fb = torch.from_numpy(mel_filterbank(16000, 512, N_MELS).astype(np.float32))  # (M, F)
    mel = (fb @ spec).clamp_min(1e-8).log10().T  # (frames, M)
    return mel.numpy().astype(np.float32)


def load_clips(identities, with_mel: bool = True, min_frames: int = 50, cache_dir=CACHE_DIR) -> list[RealClip]:
    out = []
    for ident in identities:
        for c in clips_of(load_group(ident, cache_dir)):
            n = len(c["present"])
            if n < min_frames:
                continue
            present = c["present"].astype(bool)
            lips = np.concatenate([c["lips"], present[:, None].astype(np.float32)], axis=1)
            lips[~present, :-1] = 0.0
            audio = np.pad(c["audio"], (0, max(0, n * VIDEO_HOP - len(c["audio"]))))[:n * VIDEO_HOP]
            clip = RealClip(ident, c["name"], c["crops"], lips, present, audio)
            if with_mel:
                clip.mel = log_mel(audio, n)
            out.append(clip)
    return out


def lip_stats(clips: list[RealClip]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the lip inputs over present frames (the flag itself is left unscaled)."""
    rows = np.concatenate([c.lips[c.present] for c in clips])
    mean, std = rows.mean(0), rows.std(0) + 1e-3
    mean[-1], std[-1] = 0.0, 1.0
    return mean.astype(np.float32), std.astype(np.float32)
