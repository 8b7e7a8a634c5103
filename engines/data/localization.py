"""Localization scenes: 1-3 sounding objects plus silent distractors of the same families.

Classes pair a visual family with a sound family (face + speech, guitar + guitar/singing/plucks,
loudspeaker + speech-from-a-radio/tones, appliance + dishes/motor, bike + exercise bike). Audio is
the sum of the sounding objects plus ambient noise; ground truth is each object's per-frame box and
a per-frame map of the pixels where a sounding object is drawn (taken from the rendering itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.data.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, frame_energy_db, mix_at_snr
from engines.data.clip import Clip
from engines.data.lips import mouth_track, silent_track
from engines.data.noise import noise_clip
from engines.data.objects import DRAWERS, ObjectLook
from engines.data.render import Degradation, PoseWalk, background
from engines.data.sounds import object_sound
from engines.data.speech import TRAIN, speakers, utterance
from engines.data.talking_faces import TalkingFace, detectable_style

CLASSES = ("face", "guitar", "loudspeaker", "appliance", "bike")


@dataclass(frozen=True)
class LocalizationConfig:
    split: str = TRAIN
    duration_s: float = 2.0
    width: int = 320
    height: int = 240
    sounding: tuple[int, int] = (1, 3)  # inclusive range of sounding objects
    distractors: tuple[int, int] = (0, 2)
    ambient_snr_db: tuple[float, float] = (10.0, 30.0)
    include_espeak: bool = True
    include_librispeech: bool = True  # False: espeak voices only (no shared data needed)
    degrade: bool = True
    check_detectable: bool = False


def _place(n: int, w: int, h: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Non-overlapping (cx, cy, size) slots: columns across the frame, random size and height."""
    cols = rng.permutation(n)
    out = []
    for i in range(n):
        col_w = w / n
        size = float(min(col_w * rng.uniform(0.33, 0.48), h * rng.uniform(0.22, 0.34)))
        cx = (cols[i] + 0.5) * col_w + rng.uniform(-0.1, 0.1) * col_w
        cy = float(rng.uniform(0.35, 0.65) * h)
        out.append((float(cx), cy, size))
    return out


def _activity(x: np.ndarray, n_frames: int) -> np.ndarray:
    e = frame_energy_db(x)[:n_frames]
    return np.clip((e + 50.0) / 25.0, 0, 1).astype(np.float32)


def make_localization_clip(seed: int, config: LocalizationConfig = LocalizationConfig()) -> Clip:
    rng = np.random.default_rng(seed)
    n_samples = int(round(config.duration_s * SAMPLE_RATE_HZ))
    n_frames = int(np.ceil(n_samples / SAMPLES_PER_FRAME))
    n_sound = int(rng.integers(config.sounding[0], config.sounding[1] + 1))
    n_silent = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    sound_classes = [str(c) for c in rng.choice(CLASSES, size=n_sound)]
    # distractors come from the families that sound, so only motion tells them apart
    silent_classes = [str(rng.choice(sound_classes)) for _ in range(n_silent)]
    classes = sound_classes + silent_classes
    sounding = np.array([True] * n_sound + [False] * n_silent)
    order = rng.permutation(len(classes))  # draw order (front-to-back) independent of sounding
    classes = [classes[i] for i in order]
    sounding = sounding[order]
    k_total = len(classes)

    pool = speakers(config.split, include_espeak=config.include_espeak,
                                  include_librispeech=config.include_librispeech)
    sources = np.zeros((k_total, n_samples), np.float32)
    speaker_ids: list[str | None] = [None] * k_total
    for k, (cls, on) in enumerate(zip(classes, sounding)):
        if not on:
            continue
        if cls == "face":
            spk = pool[int(rng.integers(len(pool)))]
            speaker_ids[k] = spk.id
            sources[k] = utterance(spk, rng, config.duration_s)
        else:
            sources[k] = object_sound(cls, config.split, n_samples, rng)
        sources[k] *= 10 ** (rng.uniform(-4, 4) / 20)
    snr = float(rng.uniform(*config.ambient_snr_db))
    noise = mix_at_snr(sources.sum(0), noise_clip(config.split, n_samples, rng), snr)
    peak = float(np.max(np.abs(sources.sum(0) + noise))) + 1e-9
    scale = min(1.0, 0.9 / peak)
    sources *= scale
    noise *= scale
    mixture = sources.sum(0) + noise

    slots = _place(k_total, config.width, config.height, rng)
    painters = []
    for k, cls in enumerate(classes):
        cx, cy, size = slots[k]
        if cls == "face":
            track = mouth_track(sources[k], rng, n_frames) if sounding[k] else silent_track(n_frames, rng)
            face = TalkingFace(detectable_style(rng, check=config.check_detectable), cx, cy, size * 0.8, track,
                               PoseWalk(rng), float(rng.uniform(-8, 8)), float(rng.uniform(-0.3, 0.3)))
            painters.append(lambda img, t, f=face: f.draw(img, t))
        else:
            look = ObjectLook.random(rng)
            act = _activity(sources[k], n_frames) if sounding[k] else np.zeros(n_frames, np.float32)
            draw = DRAWERS[cls]
            painters.append(lambda img, t, d=draw, c=(cx, cy, size), lk=look, a=act:
                            d(img, c[0], c[1], c[2], lk, float(a[t]), t, None))
    bg = background(rng, config.width, config.height)
    degradation = Degradation.random(rng) if config.degrade else Degradation.none()

    frames = np.empty((n_frames, config.height, config.width, 3), np.uint8)
    masks = np.zeros((n_frames, config.height, config.width), np.uint8)
    boxes = np.zeros((n_frames, k_total, 4), np.float32)
    for t in range(n_frames):
        img = bg.copy()
        owner = np.full((config.height, config.width), -1, np.int16)
        for k, paint in enumerate(painters):
            before = img.copy()
            paint(img, t)
            drawn = np.any(img != before, axis=2)
            owner[drawn] = k  # later objects occlude earlier ones
        for k in range(k_total):
            ys, xs = np.nonzero(owner == k)
            if len(xs):
                boxes[t, k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        masks[t] = np.isin(owner, np.nonzero(sounding)[0]).astype(np.uint8)
        frames[t] = degradation.apply(img, rng)
    meta = {"seed": int(seed), "split": config.split, "ambient_snr_db": snr, "speakers": speaker_ids,
            "scale": scale}
    return Clip("localization", frames, mixture.astype(np.float32), sources, noise, boxes, sounding,
                classes, meta, masks=masks)
