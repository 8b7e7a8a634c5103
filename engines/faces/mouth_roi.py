"""The mouth of one face, from its 468 face-mesh landmarks: a fixed lip vector and an aligned grey crop.

Why a module of its own: the real-face lip front end (issue 16) is learned offline on cached
VoxCeleb face tracks (`lab.real_faces.face_tracks`) and must see exactly the same numbers live, so the
cache builder and the live front end both call these two functions.

* :func:`lip_vector` — ``LIP_VECTOR_DIM`` = 83 numbers: inner-lip opening, mouth width, outer-lip height
  (all over the outer-eye-corner distance) and the 40-point lip contour (outer then inner loop) in the
  face's own frame (eyes level, mouth-corner midpoint at the origin, same unit), flattened x0, y0, x1, …
  Head size, distance and roll cancel; what is left is mouth shape.
* :func:`mouth_crop` — a ``CROP_H × CROP_W`` uint8 grey patch of the mouth, rotated so the eyes are level
  and scaled by the eye distance, so the same mouth lands on the same pixels whatever the framing.
  It spans ``CROP_SPAN_W`` × the eye distance across (a mouth is ~0.55 of it) and ``CROP_SPAN_W · CROP_H /
  CROP_W`` down, centred a little below the corners' midpoint, where the lower lip and jaw move.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.faces.face_mesh import MOUTH_LEFT, MOUTH_RIGHT, EYE_LEFT, EYE_RIGHT, mouth_features

CROP_H, CROP_W = 32, 48
CROP_SPAN_W = 1.1  # crop width in outer-eye-corner distances
CROP_DOWN = 0.08  # crop centre below the mouth-corner midpoint, in eye distances
LIP_VECTOR_DIM = 3 + 40 * 2


def lip_vector(landmarks: np.ndarray) -> np.ndarray:
    """(..., 468, 2|3) landmarks → (..., 83) float32: opening, width, height, contour (40 × (x, y))."""
    f = mouth_features(landmarks)
    lead = f["opening"].shape
    return np.concatenate([f["opening"][..., None], f["width"][..., None], f["height"][..., None],
                           f["contour"].reshape(*lead, 80)], axis=-1).astype(np.float32)


def mouth_crop(gray: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """One face's aligned mouth patch: gray (H, W) uint8 frame, landmarks (468, 2|3) in frame pixels →
    (CROP_H, CROP_W) uint8. Parts outside the frame repeat the border."""
    xy = np.asarray(landmarks, np.float64)[:, :2]
    across = xy[EYE_LEFT] - xy[EYE_RIGHT]
    iod = float(np.hypot(*across)) + 1e-6
    ux = across / iod
    uy = np.array([-ux[1], ux[0]])  # the face's down axis (image y grows downwards)
    centre = (xy[MOUTH_RIGHT] + xy[MOUTH_LEFT]) / 2 + CROP_DOWN * iod * uy
    half_w = CROP_SPAN_W * iod / 2
    half_h = half_w * CROP_H / CROP_W
    src = np.float32([centre - half_w * ux - half_h * uy, centre + half_w * ux - half_h * uy,
                      centre - half_w * ux + half_h * uy])
    dst = np.float32([[0, 0], [CROP_W, 0], [0, CROP_H]])
    scale = 2 * half_w / CROP_W  # source pixels per crop pixel
    if scale > 1.5:
        # a big face: shrink the region with area averaging first, so the warp does not alias
        corners = np.vstack([src, src[1] + src[2] - src[0]])
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        h, w = gray.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 > 4 and y1 - y0 > 4:
            region = gray[y0:y1, x0:x1]
            size = (max(1, round((x1 - x0) / scale)), max(1, round((y1 - y0) / scale)))
            small = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
            src = np.float32((src - [x0, y0]) * [fx, fy])
            gray = small
    return cv2.warpAffine(gray, cv2.getAffineTransform(src, dst), (CROP_W, CROP_H), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
