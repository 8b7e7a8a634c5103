"""The frequency-aware causal separator (issue 16): a convolutional recurrent network (CRN).

Why this and not a wider GRU: the GRU separator (`separator_model.CausalSeparator`) flattens each
257-bin frame through one Linear layer, so every frequency needs its own weights and the network cannot
reuse what it learns about a harmonic at one pitch for another. With ~1.5 hours of training speech that is
the part that does not generalise.
Causal TF networks for low-latency speech work (DPCRN, Le et al. 2021; GTCRN, Rong et al. 2024; the
dual-path RNN of Luo et al. 2020) share weights along frequency: convolutions with stride 2 in frequency,
then dual-path blocks (a bidirectional RNN *across frequency* inside each frame, a causal GRU *across
time* per band), then transposed convolutions with skip connections back to one complex ratio mask per
source. Only time needs to be causal: looking across frequencies in the current frame costs no latency.
The encoder's kernels see this frame and the one before (no look-ahead), so the algorithmic latency is
the STFT window's, as for the GRU network.

The call is the GRU network's, so the live engine, the trainers and the evaluations take either:
mixture (B, T, F, 2), lips (B, T, D), vis_state (B, D, K), state (1, B, S) → masks (B, T, M, F, 2),
vis_state, state. ``state`` packs everything the network carries between calls (each encoder layer's
previous input frame, each time-GRU's hidden state) into one row per face, so a face is still one batch row
of state.

Audio-visual (``lip_dim`` > 0): the face's lip embedding passes a causal dilated convolution (as in the
GRU network) and is added, per block, to every frequency band of the bottleneck. Those projections start
at zero, so an AV model started from an audio-only one first behaves exactly like it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from engines.separation.separator_model import (MASK_BOUND, N_FREQS, compress, compressed_magnitude, lip_branch,
                                                run_lip_branch)


@dataclass(frozen=True)
class CrnConfig:
    n_masks: int = 2
    channels: tuple[int, ...] = (16, 32, 48, 64)  # 257 → 129 → 65 → 33 → 17 bins
    blocks: int = 2  # dual-path blocks at the bottleneck
    time_hidden: int = 64
    lip_dim: int = 0  # 0 = audio-only
    visual_dim: int = 64
    vis_kernel: int = 5
    vis_dilation: int = 4
    #: every mask times this: make-up gain set after training (`train_separator --calibrate`), so the face's voice
    #: keeps its loudness. A loss that compares spectra shrinks what the network is unsure of, and SI-SDR cannot see
    #: the level, so a trained network hands a voice back quieter (lone real voices: ~9 dB) however well it separates
    output_gain: float = 1.0

    @property
    def vis_history(self) -> int:
        return (self.vis_kernel - 1) * self.vis_dilation

    @property
    def layer_channels(self) -> tuple[int, ...]:
        """Channels at the input of each encoder layer, then at the bottleneck (3 inputs: compressed re, im, |X|)."""
        return (3,) + tuple(self.channels)

    @property
    def freqs(self) -> list[int]:
        """Bins at the input of each encoder layer, then at the bottleneck."""
        out = [N_FREQS]
        for _ in self.channels:
            out.append((out[-1] - 1) // 2 + 1)
        return out

    @property
    def state_sizes(self) -> list[int]:
        chans, freqs = self.layer_channels, self.freqs
        return [chans[i] * freqs[i] for i in range(len(self.channels))] + [freqs[-1] * self.time_hidden] * self.blocks

    # the GRU network's state shape (layers, batch, hidden), so StreamingSeparator serves both
    layers = 1

    @property
    def hidden(self) -> int:
        return sum(self.state_sizes)


class DualPathBlock(nn.Module):
    """Across frequency inside one frame (bidirectional: no latency), then across time per band (causal)."""

    def __init__(self, channels: int, time_hidden: int) -> None:
        super().__init__()
        self.freq_rnn = nn.GRU(channels, channels // 2, batch_first=True, bidirectional=True)
        self.freq_out = nn.Linear(channels, channels)
        self.freq_norm = nn.LayerNorm(channels)
        self.time_rnn = nn.GRU(channels, time_hidden, batch_first=True)
        self.time_out = nn.Linear(time_hidden, channels)
        self.time_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, f = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b * t, f, c)  # sequences along frequency
        y = y + self.freq_norm(self.freq_out(self.freq_rnn(y)[0]))
        y = y.view(b, t, f, c).transpose(1, 2).reshape(b * f, t, c)  # sequences along time, one per band
        h, state = self.time_rnn(y, state)
        y = y + self.time_norm(self.time_out(h))
        return y.view(b, f, t, c).permute(0, 3, 2, 1), state


class CrnSeparator(nn.Module):
    """Mixture STFT frames → ``n_masks`` bounded complex ratio masks, strictly causal in time."""

    def __init__(self, config: CrnConfig = CrnConfig()) -> None:
        super().__init__()
        self.config = config
        chans = config.layer_channels
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, (2, 5), stride=(1, 2), padding=(0, 2)), nn.BatchNorm2d(b), nn.PReLU(b))
            for a, b in zip(chans[:-1], chans[1:]))
        self.blocks = nn.ModuleList(DualPathBlock(chans[-1], config.time_hidden) for _ in range(config.blocks))
        outs = list(chans[:-1])
        outs[0] = 2 * config.n_masks
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(chans) - 1)):
            last = i == 0
            layers = [nn.ConvTranspose2d(2 * chans[i + 1], outs[i], (1, 5), stride=(1, 2), padding=(0, 2))]
            if not last:
                layers += [nn.BatchNorm2d(outs[i]), nn.PReLU(outs[i])]
            self.decoder.append(nn.Sequential(*layers))
        with torch.no_grad():  # start at mask = 1/n: every output a share of the mixture, not silence
            head = self.decoder[-1][0]
            head.weight.mul_(0.1)
            bias = head.bias.view(config.n_masks, 2)
            bias.zero_()
            bias[:, 0] = float(torch.atanh(torch.tensor(1.0 / (config.n_masks * MASK_BOUND))))
        if config.lip_dim:
            self.visual, self.visual_out = lip_branch(config)
            self.lip_in = nn.ModuleList(nn.Linear(config.visual_dim, chans[-1]) for _ in range(config.blocks))
            for layer in self.lip_in:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return torch.zeros(batch, max(c.lip_dim, 1), c.vis_history), torch.zeros(1, batch, c.hidden)

    def _unpack(self, state: torch.Tensor) -> list[torch.Tensor]:
        c = self.config
        chans, freqs = c.layer_channels, c.freqs
        parts = state[0].split(c.state_sizes, dim=1)
        n = len(c.channels)
        frames = [p.reshape(-1, chans[i], 1, freqs[i]) for i, p in enumerate(parts[:n])]
        return frames + [p.reshape(1, -1, c.time_hidden) for p in parts[n:]]

    def forward(self, mixture: torch.Tensor, lips: torch.Tensor, vis_state: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        b, t = mixture.shape[:2]
        past = self._unpack(state)
        comp = compress(mixture).unflatten(-1, (N_FREQS, 2))  # compressed complex, phase kept
        x = torch.cat([comp, compressed_magnitude(mixture).unsqueeze(-1)], dim=-1).permute(0, 3, 1, 2)  # (B, 3, T, F)
        n_enc = len(self.encoder)
        new_state, skips = [], []
        for layer, frame in zip(self.encoder, past[:n_enc]):
            x = torch.cat([frame, x], dim=2)
            new_state.append(x[:, :, -1:].reshape(b, -1))
            x = layer(x)
            skips.append(x)
        v = None
        if c.lip_dim:
            v, vis_state = run_lip_branch(self.visual, self.visual_out, vis_state, lips, c.vis_history)
        for i, (block, h) in enumerate(zip(self.blocks, past[n_enc:])):
            if v is not None:
                x = x + self.lip_in[i](v).transpose(1, 2).unsqueeze(-1)  # the face, on every band
            x, h = block(x, h)
            new_state.append(h.reshape(b, -1))
        for layer, skip in zip(self.decoder, reversed(skips)):
            x = layer(torch.cat([x, skip], dim=1))
        mask = (c.output_gain * MASK_BOUND) * torch.tanh(x)  # (B, 2M, T, F)
        mask = mask.view(b, c.n_masks, 2, t, N_FREQS).permute(0, 3, 1, 4, 2)
        return mask, vis_state, torch.cat(new_state, dim=1).unsqueeze(0)


@dataclass
class CrnCheckpoint:
    """What a CRN weights file holds; the same fields and methods as the GRU network's `Checkpoint`."""

    config: CrnConfig
    state_dict: dict
    info: dict

    def save(self, path) -> None:
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict, "info": {"arch": "crn", **self.info}},
                   path)

    @staticmethod
    def load(path) -> "CrnCheckpoint":
        return CrnCheckpoint.from_raw(torch.load(path, map_location="cpu", weights_only=True))

    @staticmethod
    def from_raw(raw: dict) -> "CrnCheckpoint":
        cfg = dict(raw["config"], channels=tuple(raw["config"]["channels"]))
        return CrnCheckpoint(CrnConfig(**cfg), raw["state_dict"], raw["info"])

    def model(self) -> CrnSeparator:
        model = CrnSeparator(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def load_checkpoint(path):
    """A separator weights file of either network (the CRN's config has ``channels``), read once."""
    from engines.separation.separator_model import Checkpoint, SeparatorConfig

    raw = torch.load(path, map_location="cpu", weights_only=True)
    if "channels" in raw["config"]:
        return CrnCheckpoint.from_raw(raw)
    return Checkpoint(SeparatorConfig(**raw["config"]), raw["state_dict"], raw["info"])


def checkpoint(model, info: dict):
    """The checkpoint object of either network, its tensors copied."""
    from engines.separation.separator_model import Checkpoint

    kind = CrnCheckpoint if isinstance(model, CrnSeparator) else Checkpoint
    return kind(model.config, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, info)
