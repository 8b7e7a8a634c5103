"""Per-face lip features over time, from the detector's landmarks and a mouth-region crop.

Why these features: CenterFace gives 5 landmarks, of which only the two mouth corners touch the
lips, so opening cannot be read from landmarks alone. We therefore warp a mouth-region patch into a
canonical frame (eyes → horizontal, scale = inter-ocular distance, so head roll and size cancel),
normalise its brightness (lighting cancels), and describe it with a few numbers a small network can
use: a vertical intensity profile (an open mouth is a dark band between the lips), edge energies,
darkness, and motion against the same track's previous patch (what changes when someone speaks).
Geometry (mouth width, nose-to-mouth distance, in inter-ocular units) adds what the landmarks know.

The *same* :class:`LipFrontEnd` (detector → tracker → lip reader) runs on rendered training clips
and in the live ``faces`` node, so the separator learns from exactly the features it gets live.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.faces.detector import Detections, FaceDetector
from engines.faces.tracker import FaceTracker, Track

PATCH_W, PATCH_H = 24, 20  # canonical mouth patch (pixels)
PROFILE_ROWS = 8
#: feature layout (D = 16): names for logs and the model card
FEATURE_NAMES = (
    "width", "nose_mouth", "darkness", *(f"row{i}" for i in range(PROFILE_ROWS)),
    "edges_h", "edges_v", "motion", "contrast", "visible",
)
LIP_DIM = len(FEATURE_NAMES)


def mouth_patch(gray: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Warp the mouth region of one face into a ``PATCH_H × PATCH_W`` float patch.

    Returns (patch, mouth width, nose-mouth distance, inter-ocular distance) with the distances in
    pixels. The patch spans 1.3 × the inter-ocular distance across and 1.1 × down, centred a little
    below the mouth-corner midpoint, where the lower lip and jaw move.
    """
    right_eye, left_eye, nose, mouth_r, mouth_l = landmarks.astype(np.float64)
    across = left_eye - right_eye
    iod = float(np.hypot(*across)) + 1e-6
    ux = across / iod  # face's horizontal axis
    uy = np.array([-ux[1], ux[0]])  # face's down axis (image y grows downwards)
    mouth = (mouth_r + mouth_l) / 2
    centre = mouth + 0.15 * iod * uy
    half_w, half_h = 0.65 * iod, 0.55 * iod
    src = np.float32([centre - half_w * ux - half_h * uy, centre + half_w * ux - half_h * uy,
                      centre - half_w * ux + half_h * uy])
    dst = np.float32([[0, 0], [PATCH_W, 0], [0, PATCH_H]])
    patch = cv2.warpAffine(gray, cv2.getAffineTransform(src, dst), (PATCH_W, PATCH_H),
                           flags=cv2.INTER_AREA if iod > PATCH_W else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    width = float(np.hypot(*(mouth_l - mouth_r)))
    nose_mouth = float(np.dot(mouth - nose, uy))
    return patch.astype(np.float32), width, nose_mouth, iod


def describe(patch: np.ndarray, previous: np.ndarray | None, width: float, nose_mouth: float,
             iod: float, face_std: float) -> np.ndarray:
    """The D = 16 numbers of one face in one frame (see ``FEATURE_NAMES``), roughly unit scale."""
    mean, std = float(patch.mean()), float(patch.std()) + 1e-3
    z = (patch - mean) / std
    centre = z[:, PATCH_W // 4: 3 * PATCH_W // 4]
    rows = cv2.resize(centre.mean(axis=1, keepdims=True), (1, PROFILE_ROWS), interpolation=cv2.INTER_AREA)[:, 0]
    edges_h = float(np.abs(np.diff(z, axis=0)).mean())  # horizontal edges: lip contours
    edges_v = float(np.abs(np.diff(z, axis=1)).mean())
    darkness = float((centre < -1.0).mean())  # mouth cavity
    motion = 0.0 if previous is None else float(np.abs(z - previous).mean())
    return np.array([
        width / iod - 0.8, nose_mouth / iod - 0.5, 4 * darkness, *rows,
        edges_h - 0.5, edges_v - 0.5, motion, std / (face_std + 1e-3) - 1.0, 1.0,
    ], np.float32)


class LipReader:
    """Lip features per track, keeping each track's previous patch for the motion cue."""

    def __init__(self) -> None:
        self._previous: dict[int, np.ndarray] = {}
        self._last: dict[int, np.ndarray] = {}

    def read(self, bgr: np.ndarray, tracks: list[Track]) -> np.ndarray:
        """(N, LIP_DIM) for the given tracks. A held track (no detection this frame) repeats its
        last features with ``motion`` 0 and ``visible`` 0, so the model knows it is stale."""
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        out = np.zeros((len(tracks), LIP_DIM), np.float32)
        alive = set()
        for i, track in enumerate(tracks):
            alive.add(track.track_id)
            if track.detection < 0:
                last = self._last.get(track.track_id)
                if last is not None:
                    out[i] = last
                    out[i, FEATURE_NAMES.index("motion")] = 0.0
                out[i, -1] = 0.0
                continue
            patch, width, nose_mouth, iod = mouth_patch(gray, track.landmarks)
            x1, y1, x2, y2 = np.clip(track.box, 0, [gray.shape[1], gray.shape[0]] * 2).astype(int)
            face = gray[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
            face_std = float(face.std()) if face.size else 1.0
            z = (patch - patch.mean()) / (patch.std() + 1e-3)
            out[i] = describe(patch, self._previous.get(track.track_id), width, nose_mouth, iod, face_std)
            self._previous[track.track_id] = z
            self._last[track.track_id] = out[i].copy()
        for gone in set(self._previous) - alive:  # forget tracks the tracker dropped
            self._previous.pop(gone, None)
            self._last.pop(gone, None)
        return out


@dataclass(frozen=True)
class FaceFrame:
    """What the front end knows about one frame: reported tracks and their lip features."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    track_ids: np.ndarray  # (N,) int64
    lip_features: np.ndarray  # (N, LIP_DIM) float32
    visible: np.ndarray  # (N,) bool: detected this frame (False: held through a miss)


class LipFrontEnd:
    """Detector → tracker → lip reader: the visual front end of the separator, live and in training."""

    def __init__(self, detector: FaceDetector | None = None, tracker: FaceTracker | None = None) -> None:
        self.detector = detector or FaceDetector()
        self.tracker = tracker or FaceTracker()
        self.lips = LipReader()

    def process(self, bgr: np.ndarray, detections: Detections | None = None) -> FaceFrame:
        det = self.detector.detect(bgr) if detections is None else detections
        tracks = self.tracker.update(det.boxes, det.landmarks)
        feats = self.lips.read(bgr, tracks)
        boxes = np.stack([t.box for t in tracks]).astype(np.float32) if tracks else np.zeros((0, 4), np.float32)
        return FaceFrame(boxes, np.array([t.track_id for t in tracks], np.int64), feats,
                         np.array([t.detection >= 0 for t in tracks], bool))
