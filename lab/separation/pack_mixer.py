"""Training mixtures made on the training device, so a GPU is not left waiting on NumPy.

The same recipe as `audio_pretrain.mixture` (two different talkers, the second −5…+5 dB re. the first, recorded or
procedural noise on half at 0–20 dB SNR, a random overall level, optionally one voice with a silent second
source), drawn from a `speech_pack`: each source is a LibriSpeech training speaker or, with probability
``vox_share``, a VoxCeleb training identity — the voices, rooms and microphones of real video. Which talker and
utterance is drawn on the CPU (a few hundred integers); the crops, gains and noise are tensor work on the device.

Two augmentations stretch the ~90 minutes of packed speech (issue 16: "speed/pitch perturbation, reverberation"),
both off by default so older runs keep their recipe: ``speed`` plays each source 1 ± ``speed`` times as fast (tempo
and pitch together, as Kaldi's speed perturbation: a talker becomes a new talker), and ``rooms`` puts that share of
the mixtures in a simulated room (each source its own exponentially decaying noise tail after the direct sound, one
RT60 per mixture). The reverberant source is the target, as it is on real clips: the separator separates, it does
not dereverberate.
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

    def crops(self, which: torch.Tensor, n: int, candidates: int, gen: torch.Generator,
              rate: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) utterance indices → (B, n): of ``candidates`` random crops the one with the most energy (a crop
        with speech in it, not a pause), zero-padded past an utterance's end. ``rate`` (B,): each crop read that
        many samples per output sample (linear interpolation), i.e. played ``rate`` times as fast."""
        b = len(which)
        dev = self.length.device
        length = self.length[which][:, None, None]

        def at(i: torch.Tensor) -> torch.Tensor:
            return self.audio[(self.start[which][:, None, None] + i).clamp_max(len(self.audio) - 1)] * (i < length)
        span = n if rate is None else ((n - 1) * rate).ceil() + 2  # with a rate: the last sample read and its neighbour
        room = (self.length[which] - span).clamp_min(0).float()
        offset = (torch.rand(b, candidates, device=dev, generator=gen) * room[:, None]).floor()
        if rate is None:  # plain slices: one gather
            x = at(offset.long()[..., None] + torch.arange(n, device=dev))
        else:
            pos = offset[..., None] + torch.arange(n, device=dev) * rate[:, None, None]  # (B, candidates, n)
            lo = pos.floor().long()
            frac = pos - lo
            x = at(lo) * (1 - frac) + at(lo + 1) * frac
        best = x.pow(2).sum(-1).argmax(1)
        return x[torch.arange(b, device=x.device), best]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()


def pink_noise(b: int, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    spec = torch.fft.rfft(torch.randn(b, n, device=device, generator=gen))
    f = torch.fft.rfftfreq(n, 1 / RATE, device=device)
    y = torch.fft.irfft(spec / f.clamp_min(20.0).sqrt(), n)
    return y / (y.std(-1, keepdim=True) + 1e-9)


def room_tails(b: int, sources: int, gen: torch.Generator, device: torch.device, seconds: float = 0.5) -> torch.Tensor:
    """(b, sources, taps) impulse responses: the direct sound, then from 2.5 ms an exponentially decaying noise tail
    (RT60 0.15–0.7 s, one per row) at 0–12 dB below the direct sound's energy (the direct-to-reverberant ratio)."""
    taps = int(seconds * RATE)
    t = torch.arange(taps, device=device) / RATE
    rt60 = 0.15 + 0.55 * torch.rand(b, 1, 1, device=device, generator=gen)
    tail = torch.randn(b, sources, taps, device=device, generator=gen) * torch.exp(-6.9 * t / rt60) * (t >= 0.0025)
    drr_db = 12 * torch.rand(b, sources, 1, device=device, generator=gen)
    tail = tail / tail.pow(2).sum(-1, keepdim=True).sqrt() * 10 ** (-drr_db / 20)
    tail[..., 0] = 1.0
    return tail


def reverberate(x: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """(…, n) signals through (…, taps) impulse responses, the first n samples (FFT convolution)."""
    n, size = x.shape[-1], x.shape[-1] + rir.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(rir, size), size)[..., :n]


class PackMixer:
    def __init__(self, libri: list[Item], vox: list[Item], noise: list[Item], device: torch.device | str,
                 vox_share: float = 0.5, seed: int = 0, speed: float = 0.0, rooms: float = 0.0) -> None:
        self.device = torch.device(device)
        self.vox_share = vox_share
        self.speed = speed
        self.rooms = rooms
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
        rate = 1 + self.speed * (2 * torch.rand(2 * b, device=dev, generator=self.gen) - 1) if self.speed else None
        s = self.speech.crops(which.flatten(), n, 3, self.gen, rate).view(b, 2, n)
        if self.rooms:
            roomy = torch.rand(b, 1, 1, device=dev, generator=self.gen) < self.rooms
            s = torch.where(roomy, reverberate(s, room_tails(b, 2, self.gen, dev)), s)
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
