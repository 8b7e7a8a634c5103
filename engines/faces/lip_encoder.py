"""A small causal visual encoder of one face's mouth: per video frame, an embedding that follows the
speech the mouth makes. Learned on real face tracks by audio-visual synchrony (SyncNet-style, Chung &
Zisserman 2016: own audio vs other clips' audio vs the own audio shifted), `lab.real_faces.train_sync`.

Why this shape: the hand-made lip features (`lip_features.py`) were learned on generated mouths and do
not transfer to real ones (issue 16); the face mesh gives real lip geometry but only a weak per-frame
cue (r ≈ 0.25 with the audio energy). Speech is read from mouth *motion* over a few frames, so a
per-frame encoder (a 3-layer CNN on the aligned 32×48 grey mouth crop + an MLP on the 83-number mesh lip
vector, `engines/faces/mouth_roi.py`) feeds two causal temporal convolutions (5 taps each: the current
frame and the 8 before, 0.36 s at 25 fps). It looks only backwards, so it runs live frame by frame with
its history carried as state, like the separator's lip convolution.

Tensors (one call, any T ≥ 1; offline = one call over the whole track with zero state):
  crops   (B, T, 32, 48) grey mouth crops, 0..255 (float)
  lips    (B, T, 84)     the 83-number lip vector + a presence flag (1 face seen, 0 not: then zeros)
  state   (B, C, 4)      the last 4 inputs of each temporal layer, stacked on channels
→ embedding (B, T, E) (not normalised; cosine is what the sync loss and the separator's use see), state_out
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from engines.faces.mouth_roi import CROP_H, CROP_W, LIP_VECTOR_DIM


@dataclass(frozen=True)
class LipEncoderConfig:
    lip_dim: int = LIP_VECTOR_DIM + 1  # + presence flag
    channels: tuple[int, int, int] = (16, 32, 48)
    frame_dim: int = 128
    out_dim: int = 64
    kernel: int = 5
    use_crops: bool = True
    use_lips: bool = True
    dropout: float = 0.0  # training only: on the frame features and before the output

    @property
    def history(self) -> int:
        return self.kernel - 1

    @property
    def state_channels(self) -> int:
        return 2 * self.frame_dim


class LipEncoder(nn.Module):
    def __init__(self, config: LipEncoderConfig = LipEncoderConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        # normalisation of the lip vector (set from training data; identity until then)
        self.register_buffer("lip_mean", torch.zeros(c.lip_dim))
        self.register_buffer("lip_std", torch.ones(c.lip_dim))
        a, b, d = c.channels
        self.cnn = nn.Sequential(
            nn.Conv2d(1, a, 3, stride=2, padding=1), nn.BatchNorm2d(a), nn.ReLU(),  # 16×24
            nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(),  # 8×12
            nn.Conv2d(b, d, 3, stride=2, padding=1), nn.BatchNorm2d(d), nn.ReLU(),  # 4×6
        )
        n_crop = d * (CROP_H // 8) * (CROP_W // 8)
        self.crop_out = nn.Linear(n_crop, c.frame_dim)
        self.lip_mlp = nn.Sequential(nn.Linear(c.lip_dim, c.frame_dim), nn.ReLU(), nn.Linear(c.frame_dim, c.frame_dim))
        self.temporal1 = nn.Conv1d(c.frame_dim, c.frame_dim, c.kernel)
        self.temporal2 = nn.Conv1d(c.frame_dim, c.frame_dim, c.kernel)
        self.out = nn.Linear(c.frame_dim, c.out_dim)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(c.dropout)

    def initial_state(self, batch: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.config.state_channels, self.config.history, device=device)

    def frame_features(self, crops: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W), (B, T, D) → (B, T, frame_dim): each frame on its own."""
        b, t = crops.shape[:2]
        c = self.config
        present = lips[..., -1:]
        x = 0.0
        if c.use_crops:
            img = crops.reshape(b * t, 1, CROP_H, CROP_W)
            if self.training:  # ~2x faster convolutions on CPU for training (with the weights converted too)
                img = img.contiguous(memory_format=torch.channels_last)
            mean = img.mean(dim=(2, 3), keepdim=True)
            std = img.std(dim=(2, 3), keepdim=True) + 4.0  # contrast-normalised; flat (absent) crops stay ~0
            z = self.cnn((img - mean) / std).flatten(1)
            x = x + self.crop_out(z).view(b, t, -1)
        if c.use_lips:
            norm = (lips - self.lip_mean) / self.lip_std
            x = x + self.lip_mlp(norm * present)
        return self.act(x) * present  # an absent face contributes nothing but its flag's absence

    def forward(self, crops: torch.Tensor, lips: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        k, f = c.history, c.frame_dim
        x = self.drop(self.frame_features(crops, lips)).transpose(1, 2)  # (B, F, T)
        h1 = torch.cat([state[:, :f], x], dim=2)
        y = self.act(self.temporal1(h1))
        h2 = torch.cat([state[:, f:], y], dim=2)
        z = self.act(self.temporal2(h2)) + y  # residual: the first layer's view survives
        state_out = torch.cat([h1[:, :, -k:], h2[:, :, -k:]], dim=1)
        return self.out(self.drop(z.transpose(1, 2))), state_out


@dataclass
class LipEncoderCheckpoint:
    config: LipEncoderConfig
    state_dict: dict
    info: dict

    def save(self, path) -> None:
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict, "info": self.info}, path)

    @staticmethod
    def load(path) -> "LipEncoderCheckpoint":
        raw = torch.load(path, map_location="cpu", weights_only=True)
        cfg = dict(raw["config"])
        cfg["channels"] = tuple(cfg["channels"])
        return LipEncoderCheckpoint(LipEncoderConfig(**cfg), raw["state_dict"], raw["info"])

    def model(self) -> LipEncoder:
        m = LipEncoder(self.config)
        m.load_state_dict(self.state_dict)
        return m.eval()


def shipped() -> LipEncoder:
    """The shipped lip encoder (``engines/weights/lip_encoder.pt``, from `lab.real_faces.train_sync`),
    for the model registry's export."""
    from engines.models import WEIGHTS_DIR

    path = WEIGHTS_DIR / "lip_encoder.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it with `python -m lab.real_faces.train_sync`")
    return LipEncoderCheckpoint.load(path).model()
