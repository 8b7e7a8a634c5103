"""Talking faces composed from real face photos (../shared/data/faces): the mouth is opened by
warping the jaw down and painting the mouth cavity between the detected mouth corners.

Why: drawn faces teach the geometry of a moving mouth; real skin, hair and lighting are what
the live detector and lip front end see on real video, so mixing both helps transfer. Photos are
read at run time and never stored in the repository. Photos are split by file between train and
eval (the files carry no identity labels, so an identity may appear in both; only the speech is
held out by speaker).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lab.corpus.mouth_tracks import MouthTrack
from lab.corpus.data_paths import data_root
from lab.corpus.render import PoseWalk
from lab.corpus.speech import TRAIN

EVAL_EVERY = 4  # every 4th photo (sorted by name) is eval-only


@dataclass(frozen=True)
class FacePhoto:
    """A head sprite cut from a photo: BGR, alpha, face box and mouth corners in sprite pixels."""

    name: str
    bgr: np.ndarray
    alpha: np.ndarray
    box: np.ndarray  # xyxy
    mouth_left: np.ndarray  # (x, y)
    mouth_right: np.ndarray
    #: where the sprite's (0, 0) lies in the photo file, so the whole photo can be laid under it
    origin: tuple[float, float] = (0.0, 0.0)


def photo_files(split: str) -> list[Path]:
    """The photo files of a split: every ``EVAL_EVERY``-th file (sorted by name) is eval-only."""
    folder = data_root() / "faces"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    return [p for i, p in enumerate(files) if (i % EVAL_EVERY == EVAL_EVERY - 1) == (split != TRAIN)]


@functools.lru_cache(maxsize=2)
def photos(split: str) -> tuple[FacePhoto, ...]:
    """Single-face photos of a split with a confidently detected face and mouth (cached)."""
    from engines.faces import FaceDetector

    detector = FaceDetector(score_threshold=0.7, max_side_px=320)  # portraits: faces are large
    out = []
    for path in photo_files(split):
        img = cv2.imread(str(path))
        if img is None:
            continue
        det = detector.detect(img)
        if len(det) != 1:
            continue  # couples and groups: the other faces would be unannotated
        sprite = _sprite(path.stem, img, det.boxes[0], det.landmarks[0])
        if sprite is not None:
            out.append(sprite)
    return tuple(out)


def _sprite(name: str, img: np.ndarray, box: np.ndarray, lm: np.ndarray) -> FacePhoto | None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 60:
        return None  # too small to animate a mouth
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = 1.9 * max(w, h)
    sx0, sy0 = int(round(cx - side / 2)), int(round(cy - side / 2 + 0.1 * h))
    n = int(round(side))
    pad = n
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[sy0 + pad:sy0 + pad + n, sx0 + pad:sx0 + pad + n].copy()
    alpha = np.zeros((n, n), np.float32)
    # soft ellipse: head and some hair/neck, feathered so the edge blends into the new background
    cv2.ellipse(alpha, (int(cx - sx0), int(cy - sy0)), (int(0.75 * w), int(0.85 * h)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.08 * w)
    off = np.array([sx0, sy0], np.float32)
    return FacePhoto(name, crop, alpha, (box - np.tile(off, 2)).astype(np.float32),
                     lm[4] - off, lm[3] - off, (float(sx0), float(sy0)))


def open_mouth(photo: FacePhoto, opening: float, width: float) -> np.ndarray:
    """The sprite with its mouth opened by ``opening`` in [0, 1] (jaw warp + dark cavity)."""
    img = photo.bgr
    if opening < 0.03:
        return img
    ml, mr = photo.mouth_left, photo.mouth_right
    centre = (ml + mr) / 2
    mouth_w = float(np.linalg.norm(ml - mr)) * (0.9 + 0.25 * width - 0.1 * opening)
    face_h = float(photo.box[3] - photo.box[1])
    drop = opening * 0.15 * face_h  # how far the lower lip and chin move down
    n = img.shape[0]
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    wx = np.exp(-(((xs - centre[0]) / (0.9 * mouth_w)) ** 2))
    chin = photo.box[3] + 0.1 * face_h
    fy = np.clip((ys - centre[1]) / max(1.0, drop), 0, 1) * np.clip((chin + drop - ys) / (chin + drop - centre[1]) * 1.5, 0, 1)
    map_y = ys - drop * wx * fy
    out = cv2.remap(img, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # cavity: a dark ellipse in the opened gap, with a hint of teeth when wide open
    axes = (max(1, int(mouth_w / 2 * 0.85)), max(1, int(drop / 2)))
    c = (int(centre[0]), int(centre[1] + drop / 2))
    cv2.ellipse(out, c, axes, 0, 0, 360, (30, 20, 45), -1, cv2.LINE_AA)
    if opening > 0.4:
        cv2.ellipse(out, (c[0], c[1] - axes[1] + 1), (int(axes[0] * 0.7), max(1, axes[1] // 4)), 0, 0, 180,
                    (200, 205, 210), -1, cv2.LINE_AA)
    return out


@dataclass
class PhotoTalkingFace:
    """Same interface as ``TalkingFace`` (``draw(img, t) -> box``) for a real photo."""

    photo: FacePhoto
    cx: float
    cy: float
    half_height_px: float
    track: MouthTrack
    walk: PoseWalk
    base_roll_deg: float = 0.0
    base_yaw: float = 0.0

    def draw(self, img: np.ndarray, t: int) -> np.ndarray:
        dx, dy, roll, _yaw, log_s = self.walk.step()
        face_h = float(self.photo.box[3] - self.photo.box[1])
        scale = 2 * self.half_height_px * float(np.exp(log_s)) / face_h
        sprite = open_mouth(self.photo, float(self.track.opening[t]), float(self.track.width[t]))
        fc = np.array([(self.photo.box[0] + self.photo.box[2]) / 2, (self.photo.box[1] + self.photo.box[3]) / 2])
        target = (self.cx + dx * self.half_height_px, self.cy + dy * self.half_height_px)
        m = cv2.getRotationMatrix2D((float(fc[0]), float(fc[1])), -(self.base_roll_deg + float(roll)), scale)
        m[:, 2] += np.array(target) - fc
        h, w = img.shape[:2]
        warped = cv2.warpAffine(sprite, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self.photo.alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
        img[:] = (warped * alpha + img * (1 - alpha)).astype(np.uint8)
        x0, y0, x1, y1 = self.photo.box
        y1 = y1 + float(self.track.opening[t]) * 0.1 * face_h  # the chin drops with the jaw
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float32) @ m.T
        return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()],
                        np.float32)
