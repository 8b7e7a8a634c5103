"""Dense face landmarks (MediaPipe face mesh, 468 points) on real faces, for lip features.

Why: CenterFace's 5 points touch the lips only at the corners, so lip opening cannot be read from
them. MediaPipe's face-landmark network reads the whole lip contour from a 192x192 face crop in
~3 ms on one CPU thread. It ships here as ONNX (``face_landmark.onnx``, converted from the
``mediapipe`` 0.10.14 wheel's ``face_landmark.tflite``; source, licence and recipe in
``FACE_MESH_LICENSE.txt``), so it runs on ONNX Runtime like every other model and needs no
mediapipe install (which pins protobuf < 5). The ONNX matches the tflite to 2e-4 crop pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODEL_PATH = Path(__file__).resolve().parent / "face_landmark.onnx"
SIZE = 192  # the network's square input (pixels)
#: crop side / the detector box's long side. MediaPipe crops 1.5x the box of its own landmarks;
#: on CenterFace boxes that box is ~0.92x the long side, hence ~1.4 (a ~20 % margin on each side).
CROP_SCALE = 1.4

# Landmark indices in MediaPipe's canonical face mesh (the subject's right is the image's left).
INNER_UPPER, INNER_LOWER = 13, 14  # inner lip midpoints: the opening
OUTER_UPPER, OUTER_LOWER = 0, 17  # outer lip midpoints: lip height with the lips themselves
MOUTH_RIGHT, MOUTH_LEFT = 61, 291  # mouth corners
EYE_RIGHT, EYE_LEFT = 33, 263  # outer eye corners: the scale (head size and distance cancel)
#: closed loops, from the right mouth corner along the lower lip and back along the upper lip
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)


@dataclass(frozen=True)
class Mesh:
    """landmarks: (N, 468, 3) float32 x, y in frame pixels, z (depth, nearer < 0) on the x scale;
    presence: (N,) float32, the network's belief (0..1) that the crop holds a face."""

    landmarks: np.ndarray
    presence: np.ndarray


class FaceMesh:
    """468 landmarks per face box. ``threads`` is ONNX Runtime's intra-op thread count: one thread
    per stream keeps several graph nodes from fighting over a small machine's cores."""

    def __init__(self, model_path: Path = MODEL_PATH, backend: str = "auto", threads: int = 1,
                 crop_scale: float = CROP_SCALE) -> None:
        from engines.loader import load  # every model opens one way, so `backend:` moves this one too

        self.engine = load(model_path, backend=backend, threads=threads)
        self.crop_scale = crop_scale

    def __call__(self, bgr: np.ndarray, boxes: np.ndarray) -> Mesh:
        """Landmarks for each box (x1, y1, x2, y2 in frame pixels, as `FaceDetector` gives), in one run.

        The crop is square and axis-aligned (no roll correction: the detector gives no angle, and
        the network tolerates the roll of talking heads); parts outside the frame are black.
        """
        if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {getattr(bgr, 'dtype', type(bgr))} "
                             f"{getattr(bgr, 'shape', '')}")
        boxes = np.asarray(boxes, np.float64)
        boxes = boxes[None] if boxes.shape == (4,) else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"expected face boxes of shape (4,) or (N, 4), got {boxes.shape}")
        if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise ValueError(f"face boxes must be finite x1, y1, x2, y2 with x2 > x1 and y2 > y1, got {boxes.tolist()}")
        if len(boxes) == 0:
            return Mesh(np.zeros((0, 468, 3), np.float32), np.zeros((0,), np.float32))
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * self.crop_scale
        scale = SIZE / sides  # frame pixels → crop pixels
        shift = SIZE / 2 - scale[:, None] * (boxes[:, :2] + boxes[:, 2:]) / 2
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        crops = np.stack([
            cv2.warpAffine(rgb, np.float32([[k, 0, t[0]], [0, k, t[1]]]), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
            for k, t in zip(scale, shift)
        ]).astype(np.float32) / 255.0  # the model was trained on RGB in 0..1 (its tflite metadata: mean 0, std 255)
        out = self.engine.run({"image": crops})  # the batch axis is dynamic: every face in one run
        points, flag = out["landmarks"], out["face_flag"]
        points = points.reshape(-1, 468, 3).astype(np.float64)
        points[..., :2] -= shift[:, None, :]
        points /= scale[:, None, None]  # z is on the x scale in the crop, so it maps back the same way
        presence = 1.0 / (1.0 + np.exp(-flag.reshape(-1).astype(np.float64)))  # the output is a logit
        return Mesh(points.astype(np.float32), presence.astype(np.float32))


def mouth_features(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth shape from (..., 468, 2 or 3) landmarks, in image-plane (x, y) geometry.

    Every length is divided by the outer-eye-corner distance (33-263), so face size and camera
    distance cancel; the contour is also rotated so the eyes are level, so head roll cancels.
    Returns (each with the leading shape of ``landmarks``):
    ``opening``: inner lip gap 13-14, the speech cue (near 0 when the lips close);
    ``width``: mouth corners 61-291 (spreading, rounding); ``height``: outer lips 0-17;
    ``contour``: (..., 40, 2) `LIPS_OUTER` then `LIPS_INNER` points around the corners' midpoint.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim < 2 or lm.shape[-2] != 468 or lm.shape[-1] not in (2, 3):
        raise ValueError(f"expected (..., 468, 2|3) face-mesh landmarks, got shape {lm.shape}")
    xy = lm[..., :2]
    across = xy[..., EYE_LEFT, :] - xy[..., EYE_RIGHT, :]
    iod = np.linalg.norm(across, axis=-1) + 1e-9

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(xy[..., a, :] - xy[..., b, :], axis=-1) / iod

    ux = across / iod[..., None]  # the face's horizontal axis; its down axis is (-uy, ux)
    rel = xy[..., LIPS_OUTER + LIPS_INNER, :] - (xy[..., MOUTH_RIGHT, :] + xy[..., MOUTH_LEFT, :])[..., None, :] / 2
    along = (rel * ux[..., None, :]).sum(-1)
    down = rel[..., 1] * ux[..., None, 0] - rel[..., 0] * ux[..., None, 1]
    return {
        "opening": dist(INNER_UPPER, INNER_LOWER),
        "width": dist(MOUTH_RIGHT, MOUTH_LEFT),
        "height": dist(OUTER_UPPER, OUTER_LOWER),
        "contour": np.stack([along, down], axis=-1) / iod[..., None, None],
    }
