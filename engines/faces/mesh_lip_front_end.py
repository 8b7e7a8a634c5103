"""The real-face lip front end (issue 16): detector → tracker → face mesh → mouth ROI → learned lip encoder.

Per frame and per face track it gives a ``LIP_EMBEDDING_DIM``-number embedding of the mouth's recent motion,
learned on real VoxCeleb face tracks by audio-visual synchrony (`lab/real_faces/README.md`), in place of
the hand-made 16 features of `lip_features.py` (learned on generated mouths; they do not transfer).
The lip encoder is causal with carried state, kept per track ID: a new track starts from zero state (as in
training, where clips start from zero state), a held track (detector miss) steps with presence 0, a track
that ends drops its state. All faces of a frame go through the face mesh and the encoder in one call each.

Cost per face per frame on one core: face mesh ~3 ms, crop + lip vector ~0.1 ms, encoder (ONNX) see
`lab/real_faces/README.md`. Runs without torch (ONNX Runtime through `engines.loader`).
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.faces.detector import Detections, FaceDetector
from engines.faces.face_mesh import FaceMesh
from engines.faces.lip_features import FaceFrame
from engines.faces.mouth_roi import CROP_H, CROP_W, LIP_VECTOR_DIM, lip_vector, mouth_crop
from engines.faces.tracker import FaceTracker

MODEL_NAME = "lip_encoder"  # registered in engines/models
LIP_EMBEDDING_DIM = 64  # the shipped encoder's output size (engines/weights/lip_encoder.pt)
PRESENCE_MIN = 0.5  # the mesh's own belief that its crop holds a face


class MeshLipFrontEnd:
    """``process(bgr)`` → :class:`FaceFrame` whose ``lip_features`` are the lip encoder's embeddings."""

    def __init__(self, detector: FaceDetector | None = None, tracker: FaceTracker | None = None,
                 mesh: FaceMesh | None = None, encoder=None, backend: str = "auto", threads: int = 1) -> None:
        from engines.loader import load

        self.detector = detector or FaceDetector(num_threads=threads, backend=backend)
        self.tracker = tracker or FaceTracker()
        self.mesh = mesh or FaceMesh(backend=backend, threads=threads)
        self.encoder = encoder or load(MODEL_NAME, backend, threads=threads)
        shapes = {t.name: t.shape for t in self.encoder.inputs}
        self.state_shape = tuple(shapes["state"][1:])
        self.embedding_dim = LIP_EMBEDDING_DIM
        self.states: dict[int, np.ndarray] = {}
        self.last_lips = np.zeros((0, LIP_VECTOR_DIM + 1), np.float32)
        self.last_crops = np.zeros((0, CROP_H, CROP_W), np.float32)

    @staticmethod
    def _inputs(crops: np.ndarray, lips: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
        return {"crops": np.ascontiguousarray(crops[:, None], np.float32),
                "lips": np.ascontiguousarray(lips[:, None], np.float32), "state": np.ascontiguousarray(state, np.float32)}

    def mouths(self, bgr: np.ndarray, boxes: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 32, 48) crops and (N, 84) lip inputs (lip vector + presence) of the given boxes."""
        n = len(boxes)
        crops = np.zeros((n, CROP_H, CROP_W), np.float32)
        lips = np.zeros((n, LIP_VECTOR_DIM + 1), np.float32)
        live = np.flatnonzero(detected)
        if len(live):
            result = self.mesh(bgr, boxes[live])
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            for j, i in enumerate(live):
                if result.presence[j] < PRESENCE_MIN:
                    continue
                crops[i] = mouth_crop(gray, result.landmarks[j])
                lips[i, :-1] = lip_vector(result.landmarks[j])
                lips[i, -1] = 1.0
        return crops, lips

    def process(self, bgr: np.ndarray, detections: Detections | None = None) -> FaceFrame:
        det = self.detector.detect(bgr) if detections is None else detections
        tracks = self.tracker.update(det.boxes, det.landmarks)
        ids = [t.track_id for t in tracks]
        for gone in set(self.states) - set(ids):
            del self.states[gone]
        if not tracks:
            self.states.clear()
            self.last_lips = np.zeros((0, LIP_VECTOR_DIM + 1), np.float32)
            self.last_crops = np.zeros((0, CROP_H, CROP_W), np.float32)
            return FaceFrame(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 0), np.float32),
                             np.zeros(0, bool))
        boxes = np.stack([t.box for t in tracks]).astype(np.float32)
        detected = np.array([t.detection >= 0 for t in tracks], bool)
        crops, lips = self.mouths(bgr, boxes, detected)
        self.last_lips, self.last_crops = lips, crops  # this frame's mesh lip vectors and mouth crops (studies)
        state = np.stack([self.states.get(i, np.zeros(self.state_shape, np.float32)) for i in ids])
        out = self.encoder.run(self._inputs(crops, lips, state))
        for k, i in enumerate(ids):
            self.states[i] = out["state_out"][k]
        return FaceFrame(boxes, np.array(ids, np.int64), out["embedding"][:, 0].astype(np.float32), lips[:, -1] > 0)
