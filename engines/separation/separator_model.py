"""The causal audio-visual separator: "Looking to Listen" (Ephrat et al., 2018) made streaming.

Looking to Listen feeds the power-law compressed mixture STFT and per-face visual embeddings through
dilated convolutions and a *bidirectional* LSTM and predicts one complex ratio mask per face. Two
changes make it live:

* everything looks only backwards — the BLSTM becomes a unidirectional GRU whose hidden state is
  carried from call to call, the visual convolution is causal with its history carried as state —
  so the algorithmic latency is the STFT's own (one 25 ms window), see ``tests/test_separation.py``;
* a face is a batch item, not a fixed output slot: the network sees the mixture and *one* face's lip
  stream and returns that face's mask, so 1..N faces run as a batch of N and a face that arrives or
  leaves just adds or drops a row of state.

The audio-only baseline is the same network with ``lip_dim = 0`` and ``n_masks`` outputs trained with
a permutation-invariant loss (it cannot know which voice belongs to which face).

This GRU network was the shipped one until session 11; the shipped separators are now the frequency-aware CRN
(`engines/separation/crn_model.py`), which takes the same call, so the engine and the nodes serve either. The
lip branch (`lip_branch`, `run_lip_branch`) is shared by both.

Tensors (one call, any T ≥ 1; offline = one call over the whole clip with zero state):
  mixture   (B, T, F, 2)  uncompressed STFT frames, real/imag (F = 257)
  lips      (B, T, D)     lip features held at 100 fps (AV model only)
  vis_state (B, D, K)     the last K lip frames (causal conv history)
  gru_state (L, B, H)     GRU hidden state
→ mask      (B, T, M, F, 2) complex ratio masks (M = 1 for AV); new vis_state, new gru_state
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

N_FREQS = 257
POWER = 0.3  # Looking to Listen's compression exponent: tames the dynamic range of speech spectra
MASK_BOUND = 1.5  # |real|, |imag| of a mask ≤ 1.5 (bounded cRM, as the paper compresses its cRM)


@dataclass(frozen=True)
class SeparatorConfig:
    lip_dim: int = 16  # 0 = audio-only
    n_masks: int = 1
    audio_dim: int = 256
    visual_dim: int = 64
    hidden: int = 384  # the size shipped until session 11: trained on a GPU in minutes, ~0.1× real time per face on 1 core
    layers: int = 2
    vis_kernel: int = 5
    vis_dilation: int = 4  # 5 taps 40 ms apart: the last 160 ms of lip motion (4 video frames)
    #: "complex": compressed real/imag (the paper's input); "magnitude": compressed magnitude only,
    #: which does not rotate with phase and is far easier for a small network to read
    features: str = "magnitude"
    #: start with mask ≈ 1 (output = mixture) instead of ≈ 0, so training starts from "leave it"
    identity_init: bool = True

    @property
    def vis_history(self) -> int:
        return (self.vis_kernel - 1) * self.vis_dilation


def compressed_magnitude(mixture: torch.Tensor) -> torch.Tensor:
    """(…, F, 2) → (…, F): |X|^POWER."""
    return (mixture.pow(2).sum(-1) + 1e-12).pow(POWER / 2)


def compress(mixture: torch.Tensor) -> torch.Tensor:
    """(…, F, 2) complex as real/imag → (…, 2F) with magnitude raised to ``POWER``, phase kept."""
    mag2 = mixture.pow(2).sum(-1, keepdim=True)
    scale = (mag2 + 1e-12).pow((POWER - 1) / 2)
    return (mixture * scale).flatten(-2)


def lip_branch(config) -> tuple[nn.Conv1d, nn.Sequential]:
    """The face's path (a causal dilated convolution over its lip rows, then PReLU/Linear/PReLU); ``config``
    gives lip_dim, visual_dim, vis_kernel and vis_dilation (this network's and the CRN's)."""
    c = config
    return (nn.Conv1d(c.lip_dim, c.visual_dim, c.vis_kernel, dilation=c.vis_dilation),
            nn.Sequential(nn.PReLU(), nn.Linear(c.visual_dim, c.visual_dim), nn.PReLU()))


def run_lip_branch(visual: nn.Conv1d, visual_out: nn.Module, vis_state: torch.Tensor, lips: torch.Tensor,
                   history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lips (B, T, D) after the carried ``vis_state`` (B, D, history) → features (B, T, V), new vis_state.
    Causal by construction: output t sees rows t − history … t only."""
    rows = torch.cat([vis_state, lips.transpose(1, 2)], dim=2)  # (B, D, history + T)
    return visual_out(visual(rows).transpose(1, 2)), rows[:, :, -history:]


class CausalSeparator(nn.Module):
    """Mixture STFT (+ one face's lip stream) → complex ratio mask(s), frame by frame."""

    def __init__(self, config: SeparatorConfig = SeparatorConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        n_in = N_FREQS if c.features == "magnitude" else 2 * N_FREQS
        self.audio_in = nn.Sequential(nn.LayerNorm(n_in), nn.Linear(n_in, c.audio_dim), nn.PReLU())
        fused = c.audio_dim
        if c.lip_dim:
            self.visual, self.visual_out = lip_branch(c)
            fused += c.visual_dim
        self.gru = nn.GRU(fused, c.hidden, c.layers, batch_first=True)
        self.head = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.PReLU(), nn.Linear(c.hidden, c.n_masks * N_FREQS * 2))
        if c.identity_init:
            last = self.head[-1]
            with torch.no_grad():
                last.weight.mul_(0.1)
                bias = last.bias.view(c.n_masks, N_FREQS, 2)
                bias.zero_()
                bias[..., 0] = float(torch.atanh(torch.tensor(1.0 / MASK_BOUND)))  # real part 1, imag 0

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        vis = torch.zeros(batch, max(c.lip_dim, 1), c.vis_history, device=device)
        return vis, torch.zeros(c.layers, batch, c.hidden, device=device)

    def forward(self, mixture: torch.Tensor, lips: torch.Tensor, vis_state: torch.Tensor,
                gru_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        b, t = mixture.shape[:2]
        x = self.audio_in(compressed_magnitude(mixture) if c.features == "magnitude" else compress(mixture))
        if c.lip_dim:
            v, vis_state = run_lip_branch(self.visual, self.visual_out, vis_state, lips, c.vis_history)
            x = torch.cat([x, v], dim=-1)
        y, gru_state = self.gru(x, gru_state)
        mask = MASK_BOUND * torch.tanh(self.head(y))
        return mask.view(b, t, c.n_masks, N_FREQS, 2), vis_state, gru_state


def apply_mask(mask: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Complex multiply: mask (…, F, 2) ⊙ mixture (…, F, 2) → (…, F, 2)."""
    mr, mi = mask[..., 0], mask[..., 1]
    xr, xi = mixture[..., 0], mixture[..., 1]
    return torch.stack([mr * xr - mi * xi, mr * xi + mi * xr], dim=-1)


@dataclass
class Checkpoint:
    """What a weights file holds: the config and state dict, plus how it was trained."""

    config: SeparatorConfig
    state_dict: dict
    info: dict

    def save(self, path) -> None:
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict, "info": self.info}, path)

    @staticmethod
    def load(path) -> "Checkpoint":
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(SeparatorConfig(**raw["config"]), raw["state_dict"], raw["info"])

    def model(self) -> CausalSeparator:
        model = CausalSeparator(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()
