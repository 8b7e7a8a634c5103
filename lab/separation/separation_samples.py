"""Training and evaluation data: corpus clips → (clean voice, lip stream) per face → mixtures.

Lip features come from running a face front end on the clip's *rendered frames* (evaluation: the live one,
`engines.faces.mesh_lip_front_end`; this generated-face training cache: the legacy hand-made features of
`engines.faces.lip_features`, kept for the studies that made the first separator), never from the generator's mouth parameters, so the separator learns from
what it will see live. Tracks are tied to the clip's faces by box overlap (the only use of the
ground-truth boxes); a face the detector misses in a frame gets a zero row with ``visible`` 0.

Mix-and-separate (Looking to Listen's recipe): rendering and detection cost ~1.5 s per clip on this
CPU, far too slow to do per training step, so we render once into a cache of *face units* (a face's
clean speech + its lip stream) and draw training mixtures by combining units of different clips with
random gains and noise. Every unit keeps the lip stream of its own voice, so the pairing is real.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from lab.corpus.audio import SAMPLES_PER_FRAME, mix_at_snr
from lab.corpus.clip import Clip
from lab.corpus.generate import default_config, make_clip
from lab.corpus.noise import NOISE_FILES, noise_clip, procedural_noise, recording_part
from lab.corpus.speech import TRAIN
from engines.dsp import StftConfig
from engines.faces.lip_features import LIP_DIM, LipFrontEnd
from engines.faces.tracker import iou_matrix

log = logging.getLogger(__name__)
STFT = StftConfig()
CACHE_DIR = Path(__file__).resolve().parents[2] / "out" / "separation" / "cache"


def video_frame_of_stft_frame(n_stft_frames: int, cfg: StftConfig = STFT,
                              samples_per_video_frame: int = SAMPLES_PER_FRAME) -> np.ndarray:
    """For each STFT frame, the newest video frame already captured when its window ends.

    Causal zero-order hold: STFT frame j ends at sample ``j·hop + left + win``; video frame t is
    captured at sample ``t · 640`` (25 fps), so the frame used is the last one not after the window's
    end. The live separator does the same with timestamps (it holds the latest FaceTracks).
    """
    ends = cfg.frame_end_sample(np.arange(n_stft_frames))
    return ends // samples_per_video_frame


def lips_at_stft_rate(lips: np.ndarray, n_stft_frames: int) -> np.ndarray:
    """(..., Tv, D) video-rate features → (..., n_stft_frames, D) by the causal hold above."""
    idx = np.minimum(video_frame_of_stft_frame(n_stft_frames), lips.shape[-2] - 1)
    return lips[..., idx, :]


def face_lip_streams(clip: Clip, front_end=None) -> tuple[np.ndarray, float]:
    """(K, Tv, D) lip stream of each face of the clip, and the share of face-frames found. The front end
    defaults to the live one (`MeshLipFrontEnd`: D = its embedding size); the legacy `LipFrontEnd` (D = 16)
    can be passed for the old studies."""
    if front_end is None:
        from engines.faces.mesh_lip_front_end import MeshLipFrontEnd

        front_end = MeshLipFrontEnd()
    k = clip.boxes.shape[1]
    out = None
    found = 0
    for t, frame in enumerate(clip.frames):
        faces = front_end.process(frame)
        if not len(faces.track_ids):
            continue
        if out is None:
            out = np.zeros((k, clip.num_frames, faces.lip_features.shape[1]), np.float32)
        overlap = iou_matrix(clip.boxes[t], faces.boxes)
        while overlap.size and overlap.max() > 0.3:
            gi, fi = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
            out[gi, t] = faces.lip_features[fi]
            found += int(faces.visible[fi])
            overlap[gi, :] = 0
            overlap[:, fi] = 0
    if out is None:
        out = np.zeros((k, clip.num_frames, getattr(front_end, "embedding_dim", LIP_DIM)), np.float32)
    return out, found / max(1, k * clip.num_frames)


def train_config(duration_s: float = 2.0):
    """Training clips: training speakers (LibriSpeech train-clean-100 + espeak), 2–3 faces.

    Noise is added at mixing time, so the rendered clips carry none."""
    return default_config("separation", TRAIN, num_speakers=(2, 3), duration_s=duration_s, noise_prob=0.0)


def build_cache_shard(first_seed: int, count: int, out_path: Path, duration_s: float = 2.0) -> int:
    """Render ``count`` training clips and store their face units; returns units written."""
    config = train_config(duration_s)
    voices, lips, found = [], [], []
    for seed in range(first_seed, first_seed + count):
        clip = make_clip("separation", seed, config)
        streams, share = face_lip_streams(clip, LipFrontEnd())
        for k in range(clip.sources.shape[0]):
            voices.append(clip.sources[k])
            lips.append(streams[k])
            found.append(share)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, voices=np.stack(voices).astype(np.float32), lips=np.stack(lips).astype(np.float32),
             found=np.array(found, np.float32), first_seed=first_seed, count=count)
    return len(voices)


def build_cache(num_clips: int, workers: int = 1, shard_clips: int = 20, cache_dir: Path = CACHE_DIR,
                deadline_s: float | None = None, duration_s: float = 2.0) -> int:
    """Render shards ``train-<first seed>.npz`` of ``shard_clips`` clips each, in ``workers`` processes.

    Shards already present are kept (the build resumes); with ``deadline_s`` no new shard starts after
    that many seconds, so a time-boxed build still leaves whole shards. Returns shards present."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    start = time.monotonic()
    todo = [(s, cache_dir / f"train-{s:07d}.npz") for s in range(0, num_clips, shard_clips)]
    todo = [(s, p) for s, p in todo if not p.exists()]

    def submit(pool, item):
        return pool.submit(build_cache_shard, item[0], shard_clips, item[1], duration_s)

    with ProcessPoolExecutor(workers) as pool:
        running = [submit(pool, item) for item in todo[:workers]]
        queue = todo[workers:]
        while running:
            running.pop(0).result()
            if queue and (deadline_s is None or time.monotonic() - start < deadline_s):
                running.append(submit(pool, queue.pop(0)))
            log.info("cache: %d shards in %s", len(list(cache_dir.glob("train-*.npz"))), cache_dir)
    return len(list(cache_dir.glob("train-*.npz")))


def load_units(cache_dir: Path = CACHE_DIR) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Cached face units as (training voices (U, N), lips (U, Tv, D)) and (validation voices, lips).

    The last shard is held out: a *clip* split, so the validation curve measures unheard mixtures."""
    shards = sorted(cache_dir.glob("train-*.npz"))
    if len(shards) < 2:
        raise FileNotFoundError(f"need ≥ 2 training cache shards in {cache_dir} (one is held out for validation): "
                                f"run `launch.py train-separator --build-cache`")
    data = [np.load(p) for p in shards]
    train = np.concatenate([d["voices"] for d in data[:-1]]), np.concatenate([d["lips"] for d in data[:-1]])
    return train, (data[-1]["voices"], data[-1]["lips"])


class MixtureSampler:
    """Draw training mixtures from face units: 1–3 voices of different clips + optional noise.

    ``speakers`` is drawn from uniformly: the default gives 20 % single voices (the mask must then
    leave the voice alone), 40 % pairs, 40 % triples."""

    def __init__(self, voices: np.ndarray, lips: np.ndarray, seed: int = 0, noise_prob: float = 0.5,
                 snr_db: tuple[float, float] = (0.0, 20.0), speakers: tuple[int, ...] = (1, 2, 2, 3, 3),
                 crop_s: float | None = None, noise: "NoiseSource | None" = None) -> None:
        active = np.abs(voices).max(axis=1) > 1e-4  # a unit must speak at least a little
        self.voices, self.lips = voices[active], lips[active]
        self.rng = np.random.default_rng(seed)
        self.noise_prob, self.snr_db, self.speakers = noise_prob, snr_db, speakers
        self.noise = noise or (lambda n, rng: noise_clip(TRAIN, n, rng))
        # crops start on a video frame, so the lip ↔ STFT frame mapping holds inside a crop
        total = self.lips.shape[1]
        self.crop_frames = total if crop_s is None else min(total, int(round(crop_s * 25)))

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        """mixture (B, N), targets (B, S, N) with zero rows padding to S = max speakers, lips (B, S, Tv, D),
        n_speakers (B,)."""
        tv = self.crop_frames
        n = tv * SAMPLES_PER_FRAME
        s_max = max(self.speakers)
        mixture = np.zeros((batch, n), np.float32)
        targets = np.zeros((batch, s_max, n), np.float32)
        lips = np.zeros((batch, s_max, tv, self.lips.shape[2]), np.float32)
        count = np.zeros(batch, np.int64)
        for b in range(batch):
            k = int(self.rng.choice(self.speakers))
            units = self.rng.choice(len(self.voices), size=k, replace=False)
            for j, u in enumerate(units):
                f0 = int(self.rng.integers(0, self.lips.shape[1] - tv + 1))
                voice = self.voices[u, f0 * SAMPLES_PER_FRAME:(f0 + tv) * SAMPLES_PER_FRAME]
                targets[b, j, :len(voice)] = voice * 10 ** (self.rng.uniform(-5, 5) / 20)
                lips[b, j] = self.lips[u, f0:f0 + tv]
            speech = targets[b].sum(0)
            noise = np.zeros(n, np.float32)
            if self.rng.random() < self.noise_prob:
                noise = mix_at_snr(speech, self.noise(n, self.rng), float(self.rng.uniform(*self.snr_db)))
            gain = self.rng.uniform(0.2, 0.9) / (np.abs(speech + noise).max() + 1e-6)
            targets[b] *= gain
            mixture[b] = (speech + noise) * gain
            count[b] = k
        return {"mixture": mixture, "targets": targets, "lips": lips, "n_speakers": count}


NoiseSource = Callable[[int, np.random.Generator], np.ndarray]
MU = 255.0  # µ-law companding of the packed voices: 8 bits, ~38 dB SNR, far below what the model reaches


def _mu_encode(x: np.ndarray) -> np.ndarray:
    y = np.sign(x) * np.log1p(MU * np.abs(np.clip(x, -1, 1))) / np.log1p(MU)
    return np.round((y + 1) * 127.5).astype(np.uint8)


def _mu_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.5 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def save_pack(path: Path, cache_dir: Path = CACHE_DIR, max_units: int | None = None,
              noise_seconds: float = 20.0) -> dict:
    """Pack the face-unit cache into one small file that a GPU machine can train from.

    Why: the GPU machine has neither the shared recordings nor the corpus renderer (PyAV, espeak),
    and what travels there is capped at 64 MiB. Voices are µ-law 8-bit (4× smaller than float32),
    lips float16; the validation units of :func:`load_units` go last, marked by their count. The
    train part of each real noise recording rides along as a noise bank."""
    (voices, lips), (val_voices, val_lips) = load_units(cache_dir)
    n_val = len(val_voices)
    if max_units:  # keep the validation shard, trim training units
        voices, lips = voices[:max(0, max_units - n_val)], lips[:max(0, max_units - n_val)]
    voices, lips = np.concatenate([voices, val_voices]), np.concatenate([lips, val_lips])
    bank = []
    for name in NOISE_FILES:
        part = recording_part(name, TRAIN)
        if part is not None:
            bank.append(part[: int(noise_seconds * 16000)])
    noise = np.concatenate(bank) if bank else np.zeros(0, np.float32)
    scale = float(np.abs(noise).max()) if len(noise) else 1.0
    np.savez_compressed(path, voices=_mu_encode(voices), lips=lips.astype(np.float16), n_val=n_val,
                        noise=np.round(noise / max(scale, 1e-9) * 32767).astype(np.int16))
    return {"units": len(voices), "validation_units": n_val, "noise_seconds": len(noise) / 16000,
            "bytes": path.stat().st_size}


def load_pack(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], NoiseSource]:
    """(train voices, lips), (validation voices, lips), noise source — from :func:`save_pack`'s file."""
    raw = np.load(path)
    voices, lips, n_val = _mu_decode(raw["voices"]), raw["lips"].astype(np.float32), int(raw["n_val"])
    bank = raw["noise"].astype(np.float32) / 32767

    def noise(n: int, rng: np.random.Generator) -> np.ndarray:
        if len(bank) > n and rng.random() < 0.5:
            start = int(rng.integers(0, len(bank) - n))
            return bank[start:start + n].copy()
        return procedural_noise(n, rng)

    return (voices[:-n_val], lips[:-n_val]), (voices[-n_val:], lips[-n_val:]), noise


def eval_clip(set_name: str, seed: int, max_seconds: float | None = None) -> Clip:
    """A clip of a fixed evaluation set (lab.corpus.evalset), optionally shortened for speed."""
    from lab.corpus.evalset import EVAL_SETS

    config = EVAL_SETS[set_name].config
    if max_seconds:
        config = replace(config, duration_s=min(config.duration_s, max_seconds))
    return make_clip("separation", seed, config)
