"""Training mixtures made on the training device, so a GPU is not left waiting on NumPy.

The same recipe as `audio_pretrain.mixture` (two different talkers, the second −5…+5 dB re. the first, recorded or
procedural noise on half at 0–20 dB SNR, a random overall level, optionally one voice with a silent second
source), drawn from a `speech_pack`: each source is a LibriSpeech training speaker or, with probability
``vox_share``, a VoxCeleb training identity — the voices, rooms and microphones of real video. Which talker and
utterance is drawn on the CPU (a few hundred integers); the crops, gains and noise are tensor work on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from lab.separation.speech_pack import RATE, Item


class _Flat:
    """Utterances concatenated into one device tensor; crops are gathers."""

    def __init__(self, waves: list[np.ndarray], device: torch.device) -> None:
        lengths = np.array([len(w) for w in waves])
        self.audio = torch.from_numpy(np.concatenate(waves).astype(np.float32)).to(device)
        self.start = torch.from_numpy(np.cumsum(np.r_[0, lengths[:-1]])).to(device)
        self.length = torch.from_numpy(lengths).to(device)

    def crops(self, which: torch.Tensor, n: int, candidates: int, gen: torch.Generator) -> torch.Tensor:
        """(B,) utterance indices → (B, n): of ``candidates`` random crops the one with the most energy (a crop
        with speech in it, not a pause), zero-padded past an utterance's end."""
        b = len(which)
        room = (self.length[which] - n).clamp_min(0).float()
        offset = (torch.rand(b, candidates, device=room.device, generator=gen) * room[:, None]).long()
        idx = offset[..., None] + torch.arange(n, device=room.device)
        inside = idx < self.length[which][:, None, None]
        x = self.audio[(self.start[which][:, None, None] + idx).clamp_max(len(self.audio) - 1)] * inside
        best = x.pow(2).sum(-1).argmax(1)
        return x[torch.arange(b, device=x.device), best]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()


def pink_noise(b: int, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    spec = torch.fft.rfft(torch.randn(b, n, device=device, generator=gen))
    f = torch.fft.rfftfreq(n, 1 / RATE, device=device)
    y = torch.fft.irfft(spec / f.clamp_min(20.0).sqrt(), n)
    return y / (y.std(-1, keepdim=True) + 1e-9)


class PackMixer:
    def __init__(self, libri: list[Item], vox: list[Item], noise: list[Item], device: torch.device | str,
                 vox_share: float = 0.5, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.vox_share = vox_share
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(self.device)
        self.gen.manual_seed(seed)
        items = libri + vox
        self.speech = _Flat([it.audio for it in items], self.device)
        # speakers of each domain → their utterance indices (LibriSpeech ids and VoxCeleb identities never clash)
        self.domains = []
        for lo, hi in ((0, len(libri)), (len(libri), len(items))):
            talkers: dict[str, list[int]] = {}
            for i in range(lo, hi):
                talkers.setdefault(items[i].speaker, []).append(i)
            self.domains.append([np.array(v) for _, v in sorted(talkers.items())])
        self.noise = _Flat([it.audio for it in noise], self.device) if noise else None

    def _talkers(self, b: int) -> np.ndarray:
        """(b, 2) utterance indices: two per row, by two different talkers."""
        out = np.zeros((b, 2), np.int64)
        for row in range(b):
            picked: list[tuple[int, int]] = []
            while len(picked) < 2:
                d = int(self.rng.random() < self.vox_share and len(self.domains[1]) > 0)
                t = int(self.rng.integers(len(self.domains[d])))
                if (d, t) not in picked:
                    picked.append((d, t))
            out[row] = [self.rng.choice(self.domains[d][t]) for d, t in picked]
        return out

    def _noise(self, b: int, n: int) -> torch.Tensor:
        """(b, n) unit-RMS noise: a recorded one, mains hum over pink noise, or modulated pink noise."""
        kind = torch.from_numpy(self.rng.integers(0, 3 if self.noise else 2, b)).to(self.device)[:, None]
        pink = pink_noise(b, n, self.gen, self.device)
        t = torch.arange(n, device=self.device) / RATE
        f0 = torch.where(torch.rand(b, 1, device=self.device, generator=self.gen) < 0.5, 50.0, 60.0)
        phase = torch.rand(b, 5, 1, device=self.device, generator=self.gen) * 6.3
        h = torch.arange(1, 6, device=self.device)[None, :, None]
        hum = (torch.sin(2 * torch.pi * f0[:, None] * h * t + phase) / h).sum(1) + 0.5 * pink
        env = torch.nn.functional.interpolate(torch.rand(b, 1, 20, device=self.device, generator=self.gen) * 0.7 + 0.3,
                                              size=n, mode="linear", align_corners=True)[:, 0]
        out = torch.where(kind == 0, hum, pink * env)
        if self.noise is not None:
            which = torch.from_numpy(self.rng.integers(0, len(self.noise.length), b)).to(self.device)
            out = torch.where(kind == 2, self.noise.crops(which, n, 1, self.gen), out)
        return out / _rms(out)

    def batch(self, b: int, n: int, one_voice: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """→ mixtures (b, n), sources (b, 2, n) on the device, as `audio_pretrain.batch`."""
        dev = self.device
        which = torch.from_numpy(self._talkers(b)).to(dev)
        s = self.speech.crops(which.flatten(), n, 3, self.gen).view(b, 2, n)
        s = s / _rms(s)
        gain = 10 ** ((torch.rand(b, 1, device=dev, generator=self.gen) * 10 - 5) / 20)
        lone = torch.from_numpy(self.rng.random(b) < one_voice).to(dev)[:, None]
        s = torch.stack([s[:, 0], s[:, 1] * gain * (~lone)], 1)
        mix = s.sum(1)
        noisy = torch.rand(b, 1, device=dev, generator=self.gen) < 0.5
        snr = torch.rand(b, 1, device=dev, generator=self.gen) * 20
        mix = mix + noisy * self._noise(b, n) * _rms(mix) * 10 ** (-snr / 20)
        level = 10 ** ((torch.rand(b, 1, device=dev, generator=self.gen) * 18 - 30) / 20)
        level = level / mix.abs().amax(-1, keepdim=True).clamp_min(1e-6)
        return mix * level, s * level[:, None]
