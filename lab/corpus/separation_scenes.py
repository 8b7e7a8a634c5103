"""Separation clips: 2-3 talking faces, each with its own clean speech, mixed with noise.

Layouts: ``grid`` (a video call: one tile per person, own background) or ``scene`` (people side by
side in one room). Overlap is controlled: each speaker talks over a segment of length
``D * (1 + overlap) / 2`` (2 speakers) so the fraction of the clip with both talking is ``overlap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, mix_at_snr
from lab.corpus.clip import Clip
from lab.corpus.mouth_tracks import mouth_track, silent_track
from lab.corpus.noise import noise_clip
from lab.corpus.photo_faces import PhotoTalkingFace, photos
from lab.corpus.render import Degradation, PoseWalk, background
from lab.corpus.speech import TRAIN, Speaker, speakers, utterance
from lab.corpus.talking_faces import TalkingFace, detectable_style


@dataclass(frozen=True)
class SeparationConfig:
    """What to generate; every field that is a range is sampled per clip."""

    split: str = TRAIN
    num_speakers: tuple[int, ...] = (2,)
    duration_s: float = 2.0
    width: int = 320
    height: int = 180
    layouts: tuple[str, ...] = ("grid", "scene")
    overlap: tuple[float, float] = (0.5, 1.0)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (0.0, 20.0)
    include_espeak: bool = True
    include_librispeech: bool = True  # False: espeak voices only (no shared data needed)
    degrade: bool = True
    check_detectable: bool = True
    photo_prob: float = 0.3  # chance a face is a real photo from ../shared/data/faces (if present)
    peak: float = 0.9


def _activity(n: int, n_samples: int, overlap: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Active (start, end) sample ranges giving the wanted overlap between consecutive speakers."""
    if overlap >= 1.0:
        return [(0, n_samples)] * n
    seg = int(n_samples * (1 + overlap) / 2) if n == 2 else int(n_samples * (1 + 2 * overlap) / 3)
    seg = min(n_samples, seg)
    starts = np.linspace(0, n_samples - seg, n).astype(int)
    order = rng.permutation(n)
    return [(int(starts[i]), int(starts[i]) + seg) for i in order]


def _layout(kind: str, n: int, w: int, h: int, rng: np.random.Generator):
    """(tiles, face anchors): tiles are (x0, y0, x1, y1) backgrounds; anchors (cx, cy, half_h)."""
    if kind == "grid":
        tiles, anchors = [], []
        tw = w // n
        for i in range(n):
            x0 = i * tw
            tiles.append((x0, 0, x0 + tw, h))
            half = min(tw, h) * rng.uniform(0.26, 0.36)
            anchors.append((x0 + tw / 2 + rng.uniform(-0.1, 0.1) * tw, h * rng.uniform(0.4, 0.5), half))
        return tiles, anchors
    tiles = [(0, 0, w, h)]
    xs = (np.arange(n) + 0.5) / n * w + rng.uniform(-0.05, 0.05, n) * w
    anchors = [(float(x), h * rng.uniform(0.35, 0.55), min(w / n, h) * rng.uniform(0.2, 0.32)) for x in xs]
    return tiles, anchors


def make_separation_clip(seed: int, config: SeparationConfig = SeparationConfig(),
                         speaker_pool: tuple[Speaker, ...] | None = None) -> Clip:
    """Generate one clip; the same ``seed`` and config always give the same arrays."""
    rng = np.random.default_rng(seed)
    pool = speaker_pool or speakers(config.split, include_espeak=config.include_espeak,
                                  include_librispeech=config.include_librispeech)
    n = int(rng.choice(config.num_speakers))
    chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    n_samples = int(round(config.duration_s * SAMPLE_RATE_HZ))
    n_frames = int(np.ceil(n_samples / SAMPLES_PER_FRAME))
    overlap = float(rng.uniform(*config.overlap))
    active = _activity(n, n_samples, overlap, rng)

    sources = np.zeros((n, n_samples), np.float32)
    for k, (spk, (a, b)) in enumerate(zip(chosen, active)):
        gain_db = rng.uniform(-5, 5)
        sources[k, a:b] = utterance(spk, rng, (b - a) / SAMPLE_RATE_HZ) * 10 ** (gain_db / 20)
    speech_sum = sources.sum(0)
    snr = None
    noise = np.zeros(n_samples, np.float32)
    if rng.random() < config.noise_prob:
        snr = float(rng.uniform(*config.snr_db))
        noise = mix_at_snr(speech_sum, noise_clip(config.split, n_samples, rng), snr)
    peak = float(np.max(np.abs(speech_sum + noise))) + 1e-9
    scale = min(1.0, config.peak / peak)  # one common gain keeps mixture == sum of parts
    sources *= scale
    noise *= scale
    mixture = sources.sum(0) + noise

    layout = str(rng.choice(config.layouts))
    tiles, anchors = _layout(layout, n, config.width, config.height, rng)
    backgrounds = [background(rng, x1 - x0, y1 - y0) for x0, y0, x1, y1 in tiles]
    faces = []
    for k in range(n):
        track = mouth_track(sources[k], rng, n_frames)
        if not np.any(sources[k]):
            track = silent_track(n_frames, rng)
        cx, cy, half = anchors[k]
        pool_photos = photos(config.split) if config.photo_prob > 0 else ()
        if pool_photos and rng.random() < config.photo_prob:
            photo = pool_photos[int(rng.integers(len(pool_photos)))]
            faces.append(PhotoTalkingFace(photo, cx, cy, half * 0.8, track, PoseWalk(rng, 0.6),
                                          float(rng.uniform(-6, 6))))
            continue
        faces.append(TalkingFace(detectable_style(rng, check=config.check_detectable), cx, cy, half, track,
                                 PoseWalk(rng), float(rng.uniform(-8, 8)), float(rng.uniform(-0.3, 0.3))))
    degradation = Degradation.random(rng) if config.degrade else Degradation.none()

    frames = np.empty((n_frames, config.height, config.width, 3), np.uint8)
    boxes = np.zeros((n_frames, n, 4), np.float32)
    for t in range(n_frames):
        img = np.zeros((config.height, config.width, 3), np.uint8)
        for (x0, y0, x1, y1), bg in zip(tiles, backgrounds):
            img[y0:y1, x0:x1] = bg
        for k, face in enumerate(faces):
            x0, y0, x1, y1 = tiles[k] if layout == "grid" else tiles[0]
            tile = img[y0:y1, x0:x1]  # draw into the tile so a face never spills into a neighbour's
            view_face = _shifted(face, -x0, -y0)
            box = view_face.draw(tile, t)
            boxes[t, k] = np.clip(box + [x0, y0, x0, y0], [x0, y0, x0, y0], [x1, y1, x1, y1])
        if layout == "grid":
            for x0, _, _, _ in tiles[1:]:
                img[:, x0 - 1:x0 + 1] = 20
        frames[t] = degradation.apply(img, rng)

    mouth = np.stack([np.stack([f.track.opening, f.track.width], -1) for f in faces], 1)
    meta = {
        "seed": int(seed),
        "split": config.split,
        "layout": layout,
        "speakers": [s.id for s in chosen],
        "active_samples": [list(a) for a in active],
        "overlap_ratio": overlap,
        "snr_db": snr,
        "noise": snr is not None,
        "lip_lag_ms": [round(f.track.lag_ms, 2) for f in faces],
        "faces": [f"photo:{f.photo.name}" if isinstance(f, PhotoTalkingFace) else "drawn" for f in faces],
        "scale": scale,
    }
    return Clip("separation", frames, mixture.astype(np.float32), sources, noise, boxes,
                np.ones(n, bool), ["face"] * n, meta, mouth=mouth)


def _shifted(face, dx: float, dy: float):
    """The same face in tile coordinates (shares the pose walk, so motion stays continuous)."""
    face_view = type(face).__new__(type(face))
    face_view.__dict__.update(face.__dict__)
    face_view.cx, face_view.cy = face.cx + dx, face.cy + dy
    return face_view
