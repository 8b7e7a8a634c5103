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

Training-only options (``TRANSFER``; all off by default, so the held-out ``loc2`` set keeps its
v4 scenes): textured backgrounds (crops of the split's own face photos, brick walls, handwriting and
print on a wall), scenes where the only sounding thing is a small talking face (2-6 % of the frame)
among large silent distractors, and 16:9 frames, which the samples squash to the model's square
input as the live visual node squashes a 720p camera frame. ``TRANSFER2`` also lays a small talking
photo head on its own whole photo (real body and room) and burns in subtitles; ``TRANSFER3`` adds
silent hands with fingers; ``TRANSFER4`` makes them gesture, in time with their talker's speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, frame_energy_db, mix_at_snr
from lab.corpus.clip import Clip
from lab.corpus.mouth_tracks import mouth_track, silent_track
from lab.corpus.noise import noise_clip
from lab.corpus.objects import DRAWERS, ObjectLook
from lab.corpus.photo_faces import PhotoTalkingFace, photo_files, photos
from lab.corpus.render import Degradation, PoseWalk, background
from lab.corpus.sounds import object_sound
from lab.corpus.speech import TRAIN, speakers, utterance
from lab.corpus.talking_faces import TalkingFace, detectable_style

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
    #: training-only (0 keeps the v4 scenes and their random draws exactly): chance of a textured
    #: background (photo crop, brick, text) instead of the smooth procedural wall
    textured_background_prob: float = 0.0
    #: chance the scene is one small sounding face (``small_face_area``) beside 1-2 large silent objects
    small_face_prob: float = 0.0
    small_face_area: tuple[float, float] = (0.02, 0.06)
    #: chance the scene is rendered 16:9 (same height) instead of 4:3
    wide_prob: float = 0.0
    #: in a small-face scene, chance the talking face is a photo laid over its whole photo (real
    #: body, clothes, hands and room, only the mouth moves), as a person sits in real footage
    whole_photo_prob: float = 0.0
    #: chance of subtitles (changing every second or so) burnt into the bottom of the frame
    subtitle_prob: float = 0.0
    #: chance of a pair of silent clasped/resting hands with fingers (skin of a photo face) in the scene,
    #: below a talking head laid on its photo or anywhere else
    hands_prob: float = 0.0
    #: chance those hands gesture; in front of a talking head's photo, in time with its speech
    hands_gesture_prob: float = 0.0


#: what the training scenes use against the real-video gap (MODEL_CARD.md); eval sets keep the defaults
TRANSFER = dict(textured_background_prob=0.6, small_face_prob=0.3, wide_prob=0.5)
#: the second round of transfer shards also lays small talking photo faces over their whole photo
#: and burns in subtitles (MODEL_CARD.md)
TRANSFER2 = dict(TRANSFER, small_face_prob=0.5, whole_photo_prob=0.7, subtitle_prob=0.3)
#: the third round adds silent hands with fingers (the fine-tuned maps lit the restaurant's clasped hands)
TRANSFER3 = dict(TRANSFER2, hands_prob=0.7)
#: the fourth round makes those hands gesture, in time with the talker's speech when they are its own
#: (hard negatives: motion that follows the sound but is not its source)
TRANSFER4 = dict(TRANSFER3, hands_gesture_prob=0.8)


def _hands(rng: np.random.Generator, skin: tuple[int, int, int], x: float, y: float, size: float,
           n_frames: int, gesture: np.ndarray | None = None):
    """A painter for two silent hands (palms and fingers, clasped or resting) around (x, y).

    ``size`` is a face half-height: real hands are about a face wide. They drift a little. With
    ``gesture`` (a per-frame speed gain) each hand also gestures, as `Body`'s hands do: people move
    their hands while they talk, often in time with their own speech, and the hands stay silent.
    """
    clasped = rng.random() < 0.6
    angle0 = float(rng.uniform(-30, 30))
    drift = np.cumsum(rng.normal(0, 0.01 * size, (n_frames, 2)), axis=0) * (rng.random() < 0.5)
    skin_f = np.array(skin, np.float32)
    shade = tuple(int(c) for c in np.clip(skin_f * 0.7, 0, 255))
    light = tuple(int(c) for c in np.clip(skin_f * 1.15 + 10, 0, 255))

    def hand(img, cx, cy, s, angle, mirror):
        rot = np.deg2rad(angle)
        ux, uy = np.cos(rot), np.sin(rot)
        cv2.ellipse(img, (int(cx), int(cy)), (max(1, int(0.55 * s)), max(1, int(0.4 * s))), angle, 0, 360, skin, -1,
                    cv2.LINE_AA)
        for f in range(4):  # fingers: capsules towards the other hand
            off = (f - 1.5) * 0.2 * s
            bx, by = cx - uy * off, cy + ux * off
            ex, ey = bx + mirror * ux * 0.75 * s, by + mirror * uy * 0.75 * s
            cv2.line(img, (int(bx), int(by)), (int(ex), int(ey)), skin, max(1, int(0.17 * s)), cv2.LINE_AA)
            cv2.line(img, (int(ex - uy * 0.09 * s), int(ey + ux * 0.09 * s)),
                     (int(bx - uy * 0.09 * s), int(by + ux * 0.09 * s)), shade, max(1, int(0.03 * s)), cv2.LINE_AA)
        cv2.ellipse(img, (int(cx), int(cy - 0.1 * s)), (max(1, int(0.3 * s)), max(1, int(0.12 * s))), angle, 180, 360,
                    light, max(1, int(0.05 * s)), cv2.LINE_AA)

    moves = np.zeros((n_frames, 2, 3))  # per hand: x, y offset (half-heights), angle (deg)
    if gesture is not None:  # a damped random walk, as Body's, its speed set by ``gesture``
        amount = rng.uniform(0.04, 0.15)
        vel, pos = np.zeros((2, 3)), np.zeros((2, 3))
        for t in range(n_frames):
            vel = 0.8 * vel + rng.normal(0, 1, (2, 3)) * amount * gesture[t] * np.array([1.0, 1.0, 25.0])
            pos = np.clip(pos + vel, [-0.8, -0.6, -60], [0.8, 0.6, 60]) * 0.97
            moves[t] = pos

    def paint(img: np.ndarray, t: int) -> None:
        dx, dy = drift[t]
        gap = 0.35 if clasped else 1.3
        (lx, ly, la), (rx, ry, ra) = moves[t] * (size, size, 1.0)
        hand(img, x + dx - gap * size + lx, y + dy + ly, size, angle0 + la, 1)
        hand(img, x + dx + gap * size + rx, y + dy + 0.1 * size + ry, size, angle0 + 180 + ra, 1)
    return paint

_full_photo_cache: dict[str, np.ndarray] = {}


def _full_photo(split: str, name: str) -> np.ndarray | None:
    if name not in _full_photo_cache:
        path = next((p for p in photo_files(split) if p.stem == name), None)
        _full_photo_cache[name] = cv2.imread(str(path)) if path is not None else None
    return _full_photo_cache[name]


def _lay_photo(bg: np.ndarray, img: np.ndarray, photo, cx: float, cy: float, half_height: float) -> None:
    """Paste the whole photo under where ``PhotoTalkingFace`` (no pose walk) draws its head."""
    x0, y0, x1, y1 = photo.box
    s = 2 * half_height / float(y1 - y0)
    fx, fy = photo.origin[0] + (x0 + x1) / 2, photo.origin[1] + (y0 + y1) / 2
    m = np.array([[s, 0, cx - s * fx], [0, s, cy - s * fy]], np.float32)
    h, w = bg.shape[:2]
    warped = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA)
    inside = cv2.warpAffine(np.ones(img.shape[:2], np.float32), m, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.GaussianBlur(inside, (0, 0), 1.5)[..., None]
    bg[:] = (warped * inside + bg * (1 - inside)).astype(np.uint8)


def _subtitles(rng: np.random.Generator, w: int, h: int, n_frames: int):
    """A painter for burnt-in subtitles: white text near the bottom, a new line every 0.6-2 s."""
    scale = float(rng.uniform(0.35, 0.6)) * h / 240
    y = int(h * rng.uniform(0.85, 0.95))
    lines, t = [], 0
    while t < n_frames:
        n = int(rng.integers(15, 40))
        lines.append((t, "".join(rng.choice(list(_TEXT), size=n)), rng.random() < 0.3))
        t += int(rng.integers(15, 50))
    box = rng.random() < 0.3

    def paint(img: np.ndarray, t: int) -> None:
        _, text, blank = [ln for ln in lines if ln[0] <= t][-1]
        if blank:
            return
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = max(0, (w - tw) // 2)
        if box:
            cv2.rectangle(img, (x - 4, y - th - 4), (x + tw + 4, y + 6), (0, 0, 0), -1)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(scale * 2)),
                    cv2.LINE_AA)
    return paint


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


_TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,!?-+=:"
_FONTS = (cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX, cv2.FONT_HERSHEY_SIMPLEX,
          cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_PLAIN)
_photo_cache: dict[str, list[np.ndarray]] = {}


def _photo_images(split: str) -> list[np.ndarray]:
    """The split's face photo files, downscaled to ≤ 640 px, for background crops (cached)."""
    if split not in _photo_cache:
        out = []
        for path in photo_files(split):
            img = cv2.imread(str(path))
            if img is None:
                continue
            s = 640 / max(img.shape[:2])
            out.append(cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img)
        _photo_cache[split] = out
    return _photo_cache[split]


def _bricks(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.integers(60, 200, 3).astype(np.float32)
    mortar = tuple(int(c) for c in np.clip(base + rng.uniform(-80, 80), 0, 255))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = mortar
    bh = int(rng.integers(max(4, h // 30), max(6, h // 10)))
    bw = int(bh * rng.uniform(1.8, 3.2))
    gap = max(1, bh // 6)
    for row, y in enumerate(range(0, h, bh)):
        for x in range(-(row % 2) * bw // 2, w, bw):
            colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 18, 3), 0, 255))
            cv2.rectangle(img, (x + gap, y + gap), (x + bw - gap, y + bh - gap), colour, -1)
    return img


def _write(img: np.ndarray, rng: np.random.Generator) -> None:
    """Lines of handwriting or print (a menu board, a poster, a whiteboard) somewhere on the wall."""
    h, w = img.shape[:2]
    colour = (245, 245, 245) if rng.random() < 0.5 else tuple(int(c) for c in rng.integers(0, 90, 3))
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    scale = float(rng.uniform(0.3, 1.1)) * h / 240
    x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(10, h))
    line_h = int(30 * scale) + 4
    for i in range(int(rng.integers(2, 9))):
        text = "".join(rng.choice(list(_TEXT), size=int(rng.integers(4, 22))))
        cv2.putText(img, text, (x0 + int(rng.integers(-10, 10)), y0 + i * line_h), font, scale, colour,
                    max(1, int(round(scale * rng.uniform(1, 2.5)))), cv2.LINE_AA)


def textured_background(rng: np.random.Generator, width: int, height: int, split: str) -> np.ndarray:
    """A cluttered background as real footage has: a crop of a photo (people, rooms, streets; the
    split's own photos only), a brick wall or a plain wall, with handwriting or print on it."""
    kind = rng.random()
    pics = _photo_images(split)
    if kind < 0.45 and pics:
        pic = pics[int(rng.integers(len(pics)))]
        ph, pw = pic.shape[:2]
        cw = int(pw * rng.uniform(0.4, 1.0))
        ch = min(ph, int(cw * height / width * rng.uniform(0.8, 1.25)))
        x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        img = cv2.resize(pic[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            img = img[:, ::-1].copy()
    elif kind < 0.75:
        img = _bricks(rng, width, height)
    else:
        img = background(rng, width, height)
    for _ in range(int(rng.integers(0, 4)) + (kind >= 0.45)):
        _write(img, rng)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.7, 2.5)))  # depth of field
    return img


def _chance(rng: np.random.Generator, p: float) -> bool:
    """A training-only coin; with p = 0 it draws nothing, so the default scenes stay as they were."""
    return p > 0 and rng.random() < p


def make_localization_clip(seed: int, config: LocalizationConfig = LocalizationConfig()) -> Clip:
    rng = np.random.default_rng(seed)
    n_samples = int(round(config.duration_s * SAMPLE_RATE_HZ))
    n_frames = int(np.ceil(n_samples / SAMPLES_PER_FRAME))
    n_sound = int(rng.integers(config.sounding[0], config.sounding[1] + 1))
    n_silent = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    sound_classes = [str(c) for c in rng.choice(CLASSES, size=n_sound, p=CLASS_WEIGHTS)]
    # distractors come from the families that sound, so only motion tells them apart
    silent_classes = [str(rng.choice(sound_classes)) for _ in range(n_silent)]
    small_face = _chance(rng, config.small_face_prob)
    if small_face:  # a restaurant shot: the talking face is small, other things in view are large
        n_sound, n_silent = 1, int(rng.integers(1, 3))
        sound_classes = ["face"]
        silent_classes = [str(c) for c in rng.choice(CLASSES, size=n_silent, p=CLASS_WEIGHTS)]
    width = int(round(config.height * 16 / 9)) if _chance(rng, config.wide_prob) else config.width
    height = config.height
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
    whole_photo = small_face and bool(pool_photos) and _chance(rng, config.whole_photo_prob)
    looks, aspects, face_photos = [], [], []
    for k, cls in enumerate(classes):
        photo = None
        if cls == "face" and pool_photos and ((whole_photo and sounding[k]) or rng.random() < config.photo_prob):
            photo = pool_photos[int(rng.integers(len(pool_photos)))]
        face_photos.append(photo)
        looks.append("photo" if photo is not None else cls)
        aspects.append(float(rng.uniform(0.85, 1.5)))
    total = float(rng.uniform(*(config.small_face_area if small_face else config.sounding_area)))
    shares = [1.0]
    if n_sound == 2:  # two sounding objects split the area unevenly (a singer's face beside a big guitar)
        u = float(rng.uniform(0.2, 0.8))
        shares = [u, 1 - u]
    elif n_sound > 2:
        shares = [float(x) for x in rng.dirichlet(np.full(n_sound, 2.0))]
    share = iter(shares)
    distractor_area = (0.1, 0.3) if small_face else config.distractor_area
    areas = [total * next(share) if on else float(rng.uniform(*distractor_area)) for on in sounding]
    boxes_target = _boxes(looks, aspects, areas, width, height, rng)

    # (owner index, paint); owner -1: scenery, not an object. A face's paint returns its face box.
    painters: list[tuple[int, object]] = []
    names: list[str] = []
    laid: list[tuple] = []  # whole photos to lay on the background: (image, photo, cx, cy, size)
    laid_owner: list[int] = []  # the source index of each
    still: set[int] = set()
    for k, cls in enumerate(classes):
        cx, cy, size = _anchor(looks[k], aspects[k], boxes_target[k])
        if cls == "face":
            track = mouth_track(sources[k], rng, n_frames) if sounding[k] else silent_track(n_frames, rng)
            face: TalkingFace | PhotoTalkingFace
            full = (_full_photo(config.split, face_photos[k].name)
                    if face_photos[k] is not None and whole_photo and sounding[k] else None)
            if full is not None:  # the head sits still on its own photo: real body, real room
                face = PhotoTalkingFace(face_photos[k], cx, cy, size, track, PoseWalk(rng, 0.0), 0.0)
                laid.append((full, face_photos[k], cx, cy, size))
                laid_owner.append(k)
                still.add(k)
                names.append(f"photo:{face_photos[k].name}")
            elif face_photos[k] is not None:
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
    bg = (textured_background(rng, width, height, config.split)
          if _chance(rng, config.textured_background_prob) else background(rng, width, height))
    for full, photo, cx, cy, size in laid:
        _lay_photo(bg, full, photo, cx, cy, size)
    if pool_photos and _chance(rng, config.hands_prob):  # silent hands, drawn in front, not an object
        skin = _skin(pool_photos[int(rng.integers(len(pool_photos)))])
        if laid:  # in front of the laid photo's chest, as the restaurant speaker's clasped hands
            _, _, hx, hy, hs = laid[0]
            hx, hy = hx + rng.uniform(-1.0, 1.0) * hs, hy + rng.uniform(2.8, 4.0) * hs
        else:
            hs = float(rng.uniform(0.05, 0.15)) * height
            hx, hy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.3, 0.95) * height
        gesture = None
        if _chance(rng, config.hands_gesture_prob):  # a laid photo is always a talker: its own hands
            gesture = (0.2 + 1.6 * _activity(sources[laid_owner[0]], n_frames) if laid
                       else np.ones(n_frames, np.float32))
        painters.append((-1, _hands(rng, skin, float(hx), float(hy), float(hs), n_frames, gesture)))
    if _chance(rng, config.subtitle_prob):  # drawn last, over everything; not an object
        painters.append((-1, _subtitles(rng, width, height, n_frames)))
    degradation = Degradation.random(rng) if config.degrade else Degradation.none()

    frames = np.empty((n_frames, height, width, 3), np.uint8)
    masks = np.zeros((n_frames, height, width), np.uint8)
    boxes = np.zeros((n_frames, k_total, 4), np.float32)
    for t in range(n_frames):
        img = bg.copy()
        owner = np.full((height, width), -1, np.int16)
        face_boxes: dict[int, np.ndarray] = {}
        for k, paint in painters:
            before = img.copy()
            box = paint(img, t)
            if box is not None and k >= 0:
                face_boxes[k] = np.asarray(box, np.float32)
            drawn = np.any(img != before, axis=2)
            if k in still and box is not None:  # a head on its own photo changes few pixels: its box is its own
                x0, y0, x1, y1 = (max(0, int(v)) for v in (box[0], box[1], np.ceil(box[2]), np.ceil(box[3])))
                drawn[y0:y1, x0:x1] = True
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
            "scale": scale, "sounding_area_target": total, "looks": names,
            "small_face": small_face, "whole_photo": whole_photo}
    return Clip("localization", frames, mixture.astype(np.float32), sources, noise, boxes, sounding,
                classes, meta, masks=masks)
