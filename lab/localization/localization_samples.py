"""Samples for training and evaluation, cut from the corpus' localization scenes and cached.

One sample is what the live graph has when a frame arrives: the frame, the frame before it (the
visual encoder sees motion, because the scenes hold silent look-alike distractors that only motion
tells apart), the log-mel of the last second of audio (the same `engines.dsp` front end as the
live ``stft`` node), and the ground truth: the union of the sounding objects' boxes at that frame.

Generating a scene costs ~0.5 s per 2 s clip, far more than a training step, so samples are cut
once into an ``.npz`` under ``out/localization/`` and reused by every run and mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME
from engines.localization.localizer_inputs import IMAGE_SIZE, resize_frame, window_logmel

#: video frames of history the AV-synchrony baseline correlates over (1 s at 25 fps) + 1
SYNC_FRAMES = 26
SYNC_SIZE = 56  # grey thumbnails for the synchrony baseline


@dataclass
class Samples:
    """A batch of cached samples (N first). Images are BGR uint8 at 224², as a resized VideoFrame."""

    image: np.ndarray       # (N, 224, 224, 3) uint8
    previous: np.ndarray    # (N, 224, 224, 3) uint8, the frame before
    logmel: np.ndarray      # (N, 97, 80) float32
    gt: np.ndarray          # (N, 224, 224) uint8 union of sounding boxes
    history: np.ndarray | None = None  # (N, 26, 56, 56) uint8 grey frames, for the synchrony baseline
    envelope: np.ndarray | None = None  # (N, 25) float32 audio energy per video frame (dB)
    clip_seed: np.ndarray | None = None
    trunk: np.ndarray | None = None          # (N, 121, 14, 14) float16 frozen-trunk features of image
    trunk_flipped: np.ndarray | None = None  # the same of the left-right flipped image

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in self.__dict__.items() if v is not None}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> "Samples":
        with np.load(path) as z:
            return Samples(**{k: z[k] for k in z.files})

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        fields = Samples.__dataclass_fields__
        out = {}
        for name in fields:
            values = [getattr(p, name) for p in parts]
            out[name] = None if any(v is None for v in values) else np.concatenate(values)
        return Samples(**out)


def box_map(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Union of boxes (pixels of a width×height frame) as a 224² 0/1 map, as LVS builds gt_map."""
    gt = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    sx, sy = IMAGE_SIZE / width, IMAGE_SIZE / height
    for x1, y1, x2, y2 in boxes_xyxy:
        if x2 <= x1 or y2 <= y1:
            continue  # object not visible in this frame
        gt[int(y1 * sy):int(np.ceil(y2 * sy)), int(x1 * sx):int(np.ceil(x2 * sx))] = 1
    return gt


def audio_envelope(audio: np.ndarray, end_sample: int, n_frames: int = SYNC_FRAMES - 1) -> np.ndarray:
    """Energy (dB) of each of the last ``n_frames`` video frames' audio, oldest first."""
    out = np.full(n_frames, -100.0, np.float32)
    for i in range(n_frames):
        e = end_sample - (n_frames - 1 - i) * SAMPLES_PER_FRAME
        s = max(0, e - SAMPLES_PER_FRAME)
        if e > s:
            out[i] = 10 * np.log10(np.mean(audio[s:e].astype(np.float64) ** 2) + 1e-10)
    return out


def grey_history(frames: np.ndarray, t: int) -> np.ndarray:
    """Frames t−25..t as 56² grey thumbnails (repeating frame 0 before the clip starts)."""
    idx = np.clip(np.arange(t - SYNC_FRAMES + 1, t + 1), 0, None)
    return np.stack([cv2.resize(cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY), (SYNC_SIZE, SYNC_SIZE),
                                interpolation=cv2.INTER_AREA) for i in idx])


def samples_from_clip(clip, frame_indices: list[int], with_history: bool = False) -> Samples:
    """Cut samples at the given frames of one generated localization clip."""
    h, w = clip.frames.shape[1:3]
    images, prevs, mels, gts, hist, envs = [], [], [], [], [], []
    for t in frame_indices:
        end = min(len(clip.mixture), (t + 1) * SAMPLES_PER_FRAME)  # audio up to the end of frame t
        images.append(resize_frame(clip.frames[t]))
        prevs.append(resize_frame(clip.frames[max(0, t - 1)]))
        mels.append(window_logmel(clip.mixture[:end]))
        gts.append(box_map(clip.boxes[t][clip.sounding], w, h))
        if with_history:
            hist.append(grey_history(clip.frames, t))
            envs.append(audio_envelope(clip.mixture, end))
    n = len(frame_indices)
    return Samples(np.stack(images), np.stack(prevs), np.stack(mels), np.stack(gts),
                   np.stack(hist) if with_history else None, np.stack(envs) if with_history else None,
                   np.full(n, int(clip.meta.get("seed", -1)), np.int64))


def build_train_cache(path: Path, num_clips: int, frames_per_clip: int = 6, base_seed: int = 0,
                      progress: bool = True, transfer: int = 0) -> Samples:
    """Generate ``num_clips`` training scenes (2 s) and cut ``frames_per_clip`` samples from each.

    ``transfer``: 1, 2 or 3 for the scenes with the training-only options against the real-video gap
    (`lab.corpus.localization_scenes.TRANSFER`: textured backgrounds, small talking faces, 16:9 frames;
    `TRANSFER2`: also talking heads on their whole photo and burnt-in subtitles; `TRANSFER3`: also
    silent hands; `TRANSFER4`: those hands gesture, in time with their talker's speech).
    """
    from tqdm import tqdm

    from lab.corpus.generate import default_config, make_clip
    from lab.corpus.localization_scenes import TRANSFER, TRANSFER2, TRANSFER3, TRANSFER4

    rounds = {0: {}, 1: TRANSFER, 2: TRANSFER2, 3: TRANSFER3, 4: TRANSFER4}
    config = default_config("localization", **rounds[int(transfer)])
    parts = []
    for seed in tqdm(range(base_seed, base_seed + num_clips), desc="training scenes", unit="clip",
                     disable=not progress):
        clip = make_clip("localization", seed, config)
        rng = np.random.default_rng(seed)
        # frames with a full second of audio behind them (25 fps → frame 24 on)
        ts = sorted(rng.choice(np.arange(24, clip.num_frames), size=frames_per_clip, replace=False).tolist())
        parts.append(samples_from_clip(clip, ts))
    samples = Samples.concat(parts)
    samples.save(path)
    return samples


#: the corpus' held-out localization set (lab/corpus/evalset.py); its name is in the cache file name,
#: so a cache of a retired set is never read for a new one
EVAL_SET = "loc2"
#: version of the scenes (lab/corpus/localization_scenes.py), part of the cache file names (training
#: shards and held-out set): v4 = large VGG-SS-like sounding objects, photo faces on a body with
#: gesturing hands, a face's ground truth its face box. v1 (small objects, eval set "loc") had no
#: tag; v2/v3 were steps towards v4 (no hands; v2 also boxed hair and shoulders) and never shipped.
SCENES_VERSION = "v4"
#: the training-only transfer scenes of the real-video experiment, round → (cache version tag, first
#: seed): v4 + `TRANSFER` options, + `TRANSFER2` (whole photos, subtitles), + `TRANSFER3` (silent
#: hands), + `TRANSFER4` (those hands gesture). Seeds are disjoint from the v4 training seeds; the held-out set stays v4.
TRANSFER_ROUNDS = {1: ("v5t", 100_000), 2: ("v5t2", 200_000), 3: ("v5t3", 300_000), 4: ("v5t4", 400_000)}
TRANSFER_SEED_BASE = TRANSFER_ROUNDS[1][1]  # clip_seed // TRANSFER_SEED_BASE = round (0 = v4)

#: eval frames in each 4 s held-out clip: 1.2 s, 2.0 s, 2.8 s, 3.6 s (each with ≥ 1 s of audio)
EVAL_FRAMES = (30, 50, 70, 90)


def build_eval_cache(path: Path, eval_set: str = EVAL_SET, num_clips: int | None = None,
                     progress: bool = True) -> Samples:
    """Cut samples from the corpus' fixed held-out set (unseen speakers, disjoint seeds)."""
    from tqdm import tqdm

    from lab.corpus.evalset import EVAL_SETS
    from lab.corpus.generate import make_clip

    es = EVAL_SETS[eval_set]
    seeds = list(es.seeds())[:num_clips]
    parts = []
    for seed in tqdm(seeds, desc=f"held-out scenes ({eval_set})", unit="clip", disable=not progress):
        clip = make_clip(es.kind, seed, es.config)
        ts = [t for t in EVAL_FRAMES if t < clip.num_frames]
        parts.append(samples_from_clip(clip, ts, with_history=True))
    samples = Samples.concat(parts)
    samples.save(path)
    return samples


def cache_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "out" / "localization"


#: training scenes are generated in shards of this many clips, so two processes can share the work
SHARD_CLIPS = 200


def train_shard_path(first_seed: int, frames_per_clip: int, version: str = SCENES_VERSION) -> Path:
    return cache_dir() / f"train_{version}_{first_seed:06d}+{SHARD_CLIPS}x{frames_per_clip}.npz"


#: tag of the frozen trunk (`engines.localization.face_trunk`) whose features are cached beside each shard;
#: bump it when the trunk changes (other outputs, another source file), or stale features are read
TRUNK_TAG = "centerface121"


def trunk_features(images: np.ndarray, batch: int = 32, threads: int = 2) -> np.ndarray:
    """(N, 224, 224, 3) BGR uint8 → (N, 121, 14, 14) float16 features of the frozen trunk.

    Runs the trunk exported to ONNX through the engine layer, as the live node runs it: 4× faster
    than torch eager on a CPU, and training then sees the numbers the live graph computes.
    """
    from engines.loader import load
    from lab.onnx_export import export_onnx
    from engines.localization.face_trunk import FaceTrunk
    from engines.models import TensorSpec, ModelSpec

    path = cache_dir() / f"trunk_{TRUNK_TAG}.onnx"
    if not path.exists():  # the exporter every model uses; a training-time graph, never shipped alone
        export_onnx(ModelSpec(name="localizer_trunk", factory=FaceTrunk, shipped=False,
                              inputs=(TensorSpec("image", (1, 3, IMAGE_SIZE, IMAGE_SIZE)),), outputs=("trunk",),
                              dynamic_axes={"image": {0: "batch"}, "trunk": {0: "batch"}}), path)
    engine = load(path, backend="onnxruntime", threads=threads)
    out = [engine.run({"image": np.ascontiguousarray(images[i:i + batch].transpose(0, 3, 1, 2), np.float32)})["trunk"]
           for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float16)


def with_trunk(samples: Samples, shard: Path) -> Samples:
    """``samples`` with their trunk features, computed once and cached beside ``shard``."""
    path = shard.with_name(f"{shard.stem}.{TRUNK_TAG}.npz")
    if path.exists():
        with np.load(path) as z:
            samples.trunk, samples.trunk_flipped = z["trunk"], z["trunk_flipped"]
        return samples
    samples.trunk = trunk_features(samples.image)
    samples.trunk_flipped = trunk_features(np.ascontiguousarray(samples.image[:, :, ::-1]))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, trunk=samples.trunk, trunk_flipped=samples.trunk_flipped)
    tmp.replace(path)
    return samples


def load_or_build(kind: str, **kwargs) -> Samples:
    """``kind`` "train" or "eval": the cached samples, generated on first use (needs ../shared/data).

    Training samples come from ``num_clips`` v4 scenes plus ``transfer_clips`` and ``transfer<k>_clips``
    scenes of each later `TRANSFER_ROUNDS` round (each rounded up to whole shards of 200 clips).
    """
    if kind == "train":
        n, f = kwargs.get("num_clips", 800), kwargs.get("frames_per_clip", 6)
        parts = []
        for first in range(0, n, SHARD_CLIPS):
            path = train_shard_path(first, f)
            parts.append(with_trunk(Samples.load(path) if path.exists()
                                    else build_train_cache(path, SHARD_CLIPS, f, first), path))
        for which, (version, base) in TRANSFER_ROUNDS.items():
            key = "transfer_clips" if which == 1 else f"transfer{which}_clips"
            for first in range(base, base + kwargs.get(key, 0), SHARD_CLIPS):
                path = train_shard_path(first, f, version)
                parts.append(with_trunk(Samples.load(path) if path.exists()
                                        else build_train_cache(path, SHARD_CLIPS, f, first, transfer=which), path))
        return Samples.concat(parts)
    n = kwargs.get("num_clips", 100)
    path = cache_dir() / f"eval_{EVAL_SET}_{SCENES_VERSION}_{n}.npz"
    return with_trunk(Samples.load(path) if path.exists() else build_eval_cache(path, num_clips=n), path)
