"""Mix-and-separate on real faces: training mixtures drawn afresh every batch, and the fixed evaluation pairs.

A *face unit* is one cached VoxCeleb clip: its own audio and the per-frame visual embedding of its mouth
(`engines.faces.lip_encoder`). A training mixture is a 2 s crop of a target unit plus, at random, a unit of
another identity (its face on screen or not: an off-screen talker is the common video-call case), a
LibriSpeech training speaker (always off screen) and noise, with random gains. Ground truth is exact: the
mixture is the sum of the scaled sources and the scaled noise, sample for sample. Two units of the same
identity are never in one mixture.

The evaluation pairs (`eval_pairs`) put two clips of two different held-out identities side by side:
their audio summed at 0 dB (equal RMS), each face's output scored against its own clip's audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.corpus.audio import active_rms
from lab.real_faces.real_data import VIDEO_HOP


@dataclass
class FaceUnit:
    identity: str
    name: str
    audio: np.ndarray  # (Tv · 640,) float32
    emb: np.ndarray  # (Tv, E) float32 visual embedding per video frame

    @property
    def frames(self) -> int:
        return len(self.emb)


def crop(unit: FaceUnit, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    f0 = int(rng.integers(0, max(1, unit.frames - frames + 1)))
    audio = np.zeros(frames * VIDEO_HOP, np.float32)
    emb = np.zeros((frames, unit.emb.shape[1]), np.float32)
    a = unit.audio[f0 * VIDEO_HOP:(f0 + frames) * VIDEO_HOP]
    e = unit.emb[f0:f0 + frames]
    audio[:len(a)], emb[:len(e)] = a, e
    return audio, emb


def speech_crop(utterances: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    x = utterances[int(rng.integers(len(utterances)))]
    if len(x) <= n:
        return np.pad(x, (0, n - len(x))).astype(np.float32)
    s = int(rng.integers(0, len(x) - n))
    return x[s:s + n].astype(np.float32)


def gain_to(x: np.ndarray, reference_rms: float, db: float) -> float:
    return reference_rms * 10 ** (db / 20) / (active_rms(x) + 1e-9)


class RealMixtureSampler:
    """``sample(B)`` → mixture (B, N), sources (B, 3, N) [target, on/off-screen VoxCeleb talker, LibriSpeech
    talker; zeros where absent], noise (B, N), and the AV rows: row_mixture (R,), row_source (R,) (index into
    the 3 sources; −1: a silent face, whose voice is not in the mixture), row_emb (R, Tv, E).
    ``mixture == sources.sum(1) + noise`` exactly.

    ``silent_prob``: the share of mixtures that also show a face whose lips move to speech we do not hear
    (another identity's clip, muted): a listener on screen. Without them the model never saw a face whose
    voice is absent, and handed such a face the speaker's voice at nearly full level (issue 16)."""

    #: (VoxCeleb interferers, LibriSpeech interferers) and their probabilities
    LAYOUTS = ((1, 0), (0, 1), (1, 1), (0, 0))
    LAYOUT_P = (0.45, 0.2, 0.2, 0.15)

    def __init__(self, units: list[FaceUnit], speech: list[np.ndarray], seed: int = 0, crop_s: float = 2.0,
                 noise=None, noise_prob: float = 0.5, snr_db=(0.0, 20.0), sir_db=(-6.0, 6.0),
                 visible_prob: float = 0.75, weights: np.ndarray | None = None,
                 alone: np.ndarray | None = None, silent_prob: float = 0.0) -> None:
        self.units, self.speech = units, speech
        self.rng = np.random.default_rng(seed)
        self.frames = int(round(crop_s * 25))
        self.noise, self.noise_prob, self.snr_db, self.sir_db = noise, noise_prob, snr_db, sir_db
        self.visible_prob = visible_prob
        self.silent_prob = silent_prob
        # how often each unit is drawn: by its length, unless the caller weighs groups of units (e.g. a share
        # of generated faces)
        w = np.array([u.frames for u in units], np.float64) if weights is None else np.asarray(weights, np.float64)
        self.p = w / w.sum()
        self.identity = np.array([u.identity for u in units])
        # units heard only by themselves (with noise): never mixed with a second voice, never an interferer
        self.alone = np.zeros(len(units), bool) if alone is None else np.asarray(alone, bool)

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        rng, tv = self.rng, self.frames
        n = tv * VIDEO_HOP
        e = self.units[0].emb.shape[1]
        mixture, noise_out = np.zeros((batch, n), np.float32), np.zeros((batch, n), np.float32)
        sources = np.zeros((batch, 3, n), np.float32)
        row_mix, row_src, row_emb = [], [], []
        for b in range(batch):
            t = int(rng.choice(len(self.units), p=self.p))
            target, emb = crop(self.units[t], tv, rng)
            ref = active_rms(target)
            sources[b, 0] = target
            row_mix.append(b), row_src.append(0), row_emb.append(emb)
            k_vox, k_libri = self.LAYOUTS[int(rng.choice(len(self.LAYOUTS), p=self.LAYOUT_P))]
            if self.alone[t]:
                k_vox = k_libri = 0
            if k_vox:
                others = np.flatnonzero((self.identity != self.units[t].identity) & ~self.alone)
                o = int(rng.choice(others, p=self.p[others] / self.p[others].sum()))
                voice, emb_o = crop(self.units[o], tv, rng)
                sources[b, 1] = voice * gain_to(voice, ref, rng.uniform(*self.sir_db))
                if rng.random() < self.visible_prob:
                    row_mix.append(b), row_src.append(1), row_emb.append(emb_o)
            if self.silent_prob and rng.random() < self.silent_prob:
                heard = {self.units[t].identity, self.units[o].identity if k_vox else None}
                muted = np.flatnonzero(~np.isin(self.identity, list(heard - {None})) & ~self.alone)
                m = int(rng.choice(muted, p=self.p[muted] / self.p[muted].sum()))
                row_mix.append(b), row_src.append(-1), row_emb.append(crop(self.units[m], tv, rng)[1])
            if k_libri:
                voice = speech_crop(self.speech, n, rng)
                sources[b, 2] = voice * gain_to(voice, ref, rng.uniform(*self.sir_db))
            speech = sources[b].sum(0)
            noise = np.zeros(n, np.float32)
            if self.noise is not None and rng.random() < self.noise_prob:
                raw = self.noise(n, rng)
                noise = (raw * gain_to(raw, active_rms(speech), -rng.uniform(*self.snr_db))).astype(np.float32)
            peak = np.abs(speech + noise).max() + 1e-6
            g = np.float32(rng.uniform(0.2, 0.9) / peak)
            sources[b] *= g
            noise_out[b] = noise * g
            mixture[b] = sources[b].sum(0) + noise_out[b]
        return {"mixture": mixture, "sources": sources, "noise": noise_out, "row_mixture": np.array(row_mix),
                "row_source": np.array(row_src), "row_emb": np.stack(row_emb).astype(np.float32)}


def eval_pairs(units_a: list[FaceUnit], units_b: list[FaceUnit], count: int, seed: int = 0,
               max_s: float | None = None) -> list[tuple[FaceUnit, FaceUnit]]:
    """``count`` fixed pairs (one clip of each identity), each clip used about equally often."""
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.permutation(len(units_a)) for _ in range(count // len(units_a) + 1)])[:count]
    b = np.concatenate([rng.permutation(len(units_b)) for _ in range(count // len(units_b) + 1)])[:count]
    pairs = []
    for i, j in zip(a, b):
        ua, ub = units_a[i], units_b[j]
        frames = min(ua.frames, ub.frames)
        if max_s:
            frames = min(frames, int(max_s * 25))
        pairs.append((FaceUnit(ua.identity, ua.name, ua.audio[:frames * VIDEO_HOP], ua.emb[:frames]),
                      FaceUnit(ub.identity, ub.name, ub.audio[:frames * VIDEO_HOP], ub.emb[:frames])))
    return pairs


def pair_mixture(pair: tuple[FaceUnit, FaceUnit], extra: np.ndarray | None = None,
                 noise: np.ndarray | None = None, extra_db: float = 0.0, snr_db: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(mixture, references (2, N)): the two clips at equal active RMS (0 dB), optionally an off-screen talker
    ``extra`` at ``extra_db`` re. them and ``noise`` at ``snr_db`` re. the speech; peak 0.9 at most."""
    a, b = pair[0].audio, pair[1].audio
    ref = active_rms(a)
    refs = np.stack([a, b * gain_to(b, ref, 0.0)])
    speech = refs.sum(0)
    if extra is not None:
        speech = speech + extra[:len(a)] * gain_to(extra[:len(a)], ref, extra_db)
    mix = speech
    if noise is not None:
        mix = speech + noise[:len(a)] * gain_to(noise[:len(a)], active_rms(speech), -snr_db)
    g = min(1.0, 0.9 / (np.abs(mix).max() + 1e-9))
    return (mix * g).astype(np.float32), (refs * g).astype(np.float32)
