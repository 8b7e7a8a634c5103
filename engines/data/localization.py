"""Localization scenes in the manner of VGG-SS: large sounding objects, silent look-alikes beside them.

Classes pair a visual family with a sound family (face + speech, guitar + guitar/singing/plucks,
loudspeaker + speech-from-a-radio/tones, appliance + dishes/motor, bike + exercise bike). Talking
faces are real face photos with a speech-driven mouth (`photo_faces`) or drawn faces. Audio is the
sum of the sounding objects plus ambient noise; ground truth is each object's per-frame box and a
per-frame map of the pixels where a sounding object is drawn (taken from the rendering itself).

Why large objects: the LVS/EZ-VSL protocol binarises the map at its median, so its prediction
always covers half the frame, and a ground truth covering g < ½ of the frame caps cIoU at 2g.
VGG-SS, the benchmark the protocol was written for, frames its sounding objects large (close-ups
of an instrument, a speaker's head and shoulders). So do these scenes: the sounding objects'
boxes together cover ``sounding_area`` of the frame (median ~½, objects may be cut by the frame
edge as in close-ups), and 0-2 smaller silent distractors of the same families stand beside or in
front of them, so size alone does not tell which object sounds and only motion in time with the
sound does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.data.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, frame_energy_db, mix_at_snr
from engines.data.clip import Clip
from engines.data.lips import mouth_track, silent_track
from engines.data.noise import noise_clip
from engines.data.objects import DRAWERS, ObjectLook
from engines.data.photo_faces import PhotoTalkingFace, photos
from engines.data.render import Degradation, PoseWalk, background
from engines.data.sounds import object_sound
from engines.data.speech import TRAIN, speakers, utterance
from engines.data.talking_faces import TalkingFace, detectable_style

CLASSES = ("face", "guitar", "loudspeaker", "appliance", "bike")
#: talking faces are drawn more often than the other families: speech is the commonest sounding
#: thing in VGG-SS-like video and the one the live graph cares about
CLASS_WEIGHTS = (0.4, 0.15, 0.15, 0.15, 0.15)

#: extent of each look's ground-truth box around its anchor (cx, cy), in units of its ``size``
#: argument: (left, right, top, bottom), measured by drawing each at size 100 (aspect 1, mouth
#: closed). Objects: everything drawn. Faces: the face box (brow to chin) that ``draw`` returns, per
#: face half-height; hair, neck, shoulders and the torso under a photo head lie outside it, because
#: the voice comes from the face (and the real-video check scores the peak on the detector's face box).
EXTENT = {
    "guitar": (0.43, 0.43, 1.05, 0.74),
    "loudspeaker": (0.57, 0.57, 0.92, 0.92),
    "appliance": (0.75, 0.75, 0.85, 0.85),
    "bike": (0.99, 0.99, 0.49, 0.79),
    "face": (0.8, 0.8, 1.0, 1.0),            # drawn face
    "photo": (0.74, 0.74, 1.0, 1.0),         # photo face
}
#: tallest box, as a fraction of the frame height: objects may be cut by the frame edge (close-ups);
#: a face box stays inside the frame (its hair and shoulders need not)
MAX_HEIGHT = {"face": 0.95, "photo": 0.95}


@dataclass(frozen=True)
class LocalizationConfig:
    split: str = TRAIN
    duration_s: float = 2.0
    width: int = 320
    height: int = 240
    sounding: tuple[int, int] = (1, 2)  # inclusive range of sounding objects
    distractors: tuple[int, int] = (0, 2)
    #: the sounding objects' boxes together aim at this fraction of the frame (uniform draw)
    sounding_area: tuple[float, float] = (0.3, 0.75)
    #: each silent distractor's box aims at this fraction of the frame (overlaps the sounding
    #: objects' sizes: a small face can be the one that talks, a large one can be silent)
    distractor_area: tuple[float, float] = (0.04, 0.25)
    photo_prob: float = 0.6  # chance a talking face is a real photo (if ../shared/data/faces exists)
    ambient_snr_db: tuple[float, float] = (10.0, 30.0)
    include_espeak: bool = True
    include_librispeech: bool = True  # False: espeak voices only (no shared data needed)
    degrade: bool = True
    check_detectable: bool = False


def _extent(look: str, aspect: float) -> np.ndarray:
    left, right, top, bottom = EXTENT[look]
    widen = aspect if look in ("guitar", "loudspeaker", "appliance") else 1.0
    return np.array([left * widen, right * widen, top, bottom])


def _boxes(looks: list[str], aspects: list[float], areas: list[float], w: int, h: int,
           rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Target boxes (x0, y0, x1, y1) side by side across the frame, each of its own shape and area.

    A box taller than the frame is cut by the frame edge (a close-up); boxes wider together than
    the frame overlap (later ones in draw order occlude earlier ones).
    """
    sizes = []
    for look, aspect, area in zip(looks, aspects, areas):
        l, r, t, b = _extent(look, aspect)
        ratio = (l + r) / (t + b)  # width / height of the drawn object
        bh = min(np.sqrt(area * w * h / ratio), MAX_HEIGHT.get(look, 1.25) * h)
        bw = min(bh * ratio, 0.95 * w)
        sizes.append((bw, bw / ratio))
    order = rng.permutation(len(looks))
    widths = np.array([sizes[i][0] for i in order])
    if widths.sum() <= w:
        gaps = rng.dirichlet(np.ones(len(widths) + 1)) * (w - widths.sum())
        lefts = np.cumsum(np.concatenate([[0.0], widths[:-1]])) + np.cumsum(gaps[:-1])
    else:  # squeeze: neighbours overlap evenly, the row spans the frame
        step = (w - widths[-1]) / max(widths[:-1].sum(), 1e-6)
        lefts = np.cumsum(np.concatenate([[0.0], widths[:-1] * step]))
    out: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * len(looks)
    for j, i in enumerate(order):
        bw, bh = sizes[i]
        top = rng.uniform(0, h - bh) if bh <= h else rng.uniform(h - bh, 0.0)
        out[i] = (float(lefts[j]), float(top), float(lefts[j] + bw), float(top + bh))
    return out


def _anchor(look: str, aspect: float, box: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """(cx, cy, size) that draws ``look`` filling ``box``."""
    l, r, t, b = _extent(look, aspect)
    size = (box[3] - box[1]) / (t + b)
    return box[0] + l * size, box[1] + t * size, size


@dataclass(frozen=True)
class Body:
    """Shoulders, chest and two gesturing hands under a photo head (which ends at the neck).

    Real speakers have a body, and their hands move while they talk (often in time with the
    speech); neither is where the voice comes from, so these pixels belong to no object and only
    the face and its mouth tell a talking person from a silent one.
    """

    clothes_bgr: tuple[int, int, int]
    skin_bgr: tuple[int, int, int]
    hands: np.ndarray  # (n_frames, 2, 3): per hand x, y offset (half-heights) and angle (deg)

    @staticmethod
    def random(rng: np.random.Generator, skin_bgr: tuple[int, int, int], n_frames: int,
               activity: np.ndarray | None) -> "Body":
        clothes = tuple(int(c) for c in rng.integers(10, 120, 3) + (rng.random() < 0.3) * 110)
        rest = np.array([[rng.uniform(-1.1, -0.1), rng.uniform(2.9, 3.8), rng.uniform(-40, 40)],
                         [rng.uniform(0.1, 1.1), rng.uniform(2.9, 3.8), rng.uniform(-40, 40)]])
        if rng.random() < 0.3:  # clasped on the table
            rest[1, :2] = rest[0, :2] + (0.5, rng.uniform(-0.1, 0.1))
        # gestures: a damped random walk, its speed following the speaker's own sound half the time
        gain = np.ones(n_frames) if activity is None or rng.random() < 0.5 else 0.2 + 1.6 * activity
        amount = rng.uniform(0.0, 0.12)
        vel, pos, out = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((n_frames, 2, 3))
        for t in range(n_frames):
            vel = 0.8 * vel + rng.normal(0, 1, (2, 3)) * amount * gain[t] * np.array([1.0, 1.0, 25.0])
            pos = np.clip(pos + vel, [-0.6, -0.5, -60], [0.6, 0.5, 60]) * 0.97
            out[t] = rest + pos
        return Body(clothes, skin_bgr, out)  # type: ignore[arg-type]

    def draw(self, img: np.ndarray, t: int, cx: float, cy: float, half_height: float) -> None:
        s = half_height
        cv2.ellipse(img, (int(cx), int(cy + 3.3 * s)), (int(2.0 * s), int(1.6 * s)), 0, 0, 360, self.clothes_bgr,
                    -1, cv2.LINE_AA)
        collar = np.array([[cx - 0.45 * s, cy + 1.75 * s], [cx + 0.45 * s, cy + 1.75 * s], [cx, cy + 2.6 * s]],
                          np.int32)
        cv2.fillPoly(img, [collar], tuple(min(255, c + 60) for c in self.clothes_bgr), cv2.LINE_AA)
        for dx, dy, angle in self.hands[t]:
            centre = (int(cx + dx * s), int(cy + dy * s))
            cv2.ellipse(img, centre, (max(1, int(0.42 * s)), max(1, int(0.28 * s))), float(angle), 0, 360,
                        self.skin_bgr, -1, cv2.LINE_AA)
            shade = tuple(int(0.75 * c) for c in self.skin_bgr)
            cv2.ellipse(img, centre, (max(1, int(0.42 * s)), max(1, int(0.28 * s))), float(angle), 0, 360, shade,
                        max(1, int(0.05 * s)), cv2.LINE_AA)


def _skin(photo) -> tuple[int, int, int]:
    """Median colour of the middle of a photo's face box (cheeks and nose)."""
    x0, y0, x1, y1 = photo.box
    w, h = x1 - x0, y1 - y0
    patch = photo.bgr[int(y0 + 0.45 * h):int(y0 + 0.7 * h), int(x0 + 0.3 * w):int(x1 - 0.3 * w)]
    return tuple(int(c) for c in np.median(patch.reshape(-1, 3), axis=0))  # type: ignore[return-value]


def _activity(x: np.ndarray, n_frames: int) -> np.ndarray:
    e = frame_energy_db(x)[:n_frames]
    return np.clip((e + 50.0) / 25.0, 0, 1).astype(np.float32)


def make_localization_clip(seed: int, config: LocalizationConfig = LocalizationConfig()) -> Clip:
    rng = np.random.default_rng(seed)
    n_samples = int(round(config.duration_s * SAMPLE_RATE_HZ))
    n_frames = int(np.ceil(n_samples / SAMPLES_PER_FRAME))
    n_sound = int(rng.integers(config.sounding[0], config.sounding[1] + 1))
    n_silent = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    sound_classes = [str(c) for c in rng.choice(CLASSES, size=n_sound, p=CLASS_WEIGHTS)]
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

    pool_photos = photos(config.split) if config.photo_prob > 0 else ()
    looks, aspects, face_photos = [], [], []
    for cls in classes:
        photo = None
        if cls == "face" and pool_photos and rng.random() < config.photo_prob:
            photo = pool_photos[int(rng.integers(len(pool_photos)))]
        face_photos.append(photo)
        looks.append("photo" if photo is not None else cls)
        aspects.append(float(rng.uniform(0.85, 1.5)))
    total = float(rng.uniform(*config.sounding_area))
    shares = [1.0]
    if n_sound == 2:  # two sounding objects split the area unevenly (a singer's face beside a big guitar)
        u = float(rng.uniform(0.2, 0.8))
        shares = [u, 1 - u]
    elif n_sound > 2:
        shares = [float(x) for x in rng.dirichlet(np.full(n_sound, 2.0))]
    share = iter(shares)
    areas = [total * next(share) if on else float(rng.uniform(*config.distractor_area)) for on in sounding]
    boxes_target = _boxes(looks, aspects, areas, config.width, config.height, rng)

    # (owner index, paint); owner -1: scenery, not an object. A face's paint returns its face box.
    painters: list[tuple[int, object]] = []
    names: list[str] = []
    for k, cls in enumerate(classes):
        cx, cy, size = _anchor(looks[k], aspects[k], boxes_target[k])
        if cls == "face":
            track = mouth_track(sources[k], rng, n_frames) if sounding[k] else silent_track(n_frames, rng)
            face: TalkingFace | PhotoTalkingFace
            if face_photos[k] is not None:
                face = PhotoTalkingFace(face_photos[k], cx, cy, size, track, PoseWalk(rng, 0.6),
                                        float(rng.uniform(-6, 6)))
                body = Body.random(rng, _skin(face_photos[k]), n_frames,
                                   _activity(sources[k], n_frames) if sounding[k] else None)
                painters.append((-1, lambda img, t, b=body, c=(cx, cy, size): b.draw(img, t, *c)))
                names.append(f"photo:{face_photos[k].name}")
            else:
                face = TalkingFace(detectable_style(rng, check=config.check_detectable), cx, cy, size, track,
                                   PoseWalk(rng), float(rng.uniform(-8, 8)), float(rng.uniform(-0.3, 0.3)))
                names.append("drawn")
            painters.append((k, lambda img, t, f=face: f.draw(img, t)))
        else:
            look = ObjectLook.random(rng)
            look = ObjectLook(look.body_bgr, look.accent_bgr, aspects[k])
            act = _activity(sources[k], n_frames) if sounding[k] else np.zeros(n_frames, np.float32)
            draw = DRAWERS[cls]
            painters.append((k, lambda img, t, d=draw, c=(cx, cy, size), lk=look, a=act:
                            d(img, c[0], c[1], c[2], lk, float(a[t]), t, None)))
            names.append("drawn")
    bg = background(rng, config.width, config.height)
    degradation = Degradation.random(rng) if config.degrade else Degradation.none()

    frames = np.empty((n_frames, config.height, config.width, 3), np.uint8)
    masks = np.zeros((n_frames, config.height, config.width), np.uint8)
    boxes = np.zeros((n_frames, k_total, 4), np.float32)
    for t in range(n_frames):
        img = bg.copy()
        owner = np.full((config.height, config.width), -1, np.int16)
        face_boxes: dict[int, np.ndarray] = {}
        for k, paint in painters:
            before = img.copy()
            box = paint(img, t)
            if box is not None and k >= 0:
                face_boxes[k] = np.asarray(box, np.float32)
            drawn = np.any(img != before, axis=2)
            owner[drawn] = k  # later objects occlude earlier ones
        for k in range(k_total):
            mine = owner == k
            if k in face_boxes:  # only the face itself counts: clip the drawn pixels to the face box
                x0, y0, x1, y1 = face_boxes[k]
                inside = np.zeros_like(mine)
                inside[max(0, int(y0)):max(0, int(np.ceil(y1))), max(0, int(x0)):max(0, int(np.ceil(x1)))] = True
                mine &= inside
                owner[(owner == k) & ~mine] = -1
            ys, xs = np.nonzero(mine)
            if len(xs):
                boxes[t, k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        masks[t] = np.isin(owner, np.nonzero(sounding)[0]).astype(np.uint8)
        frames[t] = degradation.apply(img, rng)
    meta = {"seed": int(seed), "split": config.split, "ambient_snr_db": snr, "speakers": speaker_ids,
            "scale": scale, "sounding_area_target": total, "looks": names}
    return Clip("localization", frames, mixture.astype(np.float32), sources, noise, boxes, sounding,
                classes, meta, masks=masks)
