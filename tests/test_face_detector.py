"""FaceDetector on real photos and video (shared data) and on the generated talking faces; the prepared
CenterFace ONNX and its engine path (ONNX Runtime, and TensorRT through tests/fake_tensorrt.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.backends.cache_dir import file_sha256
from lab.corpus.data_paths import data_root
from engines.faces import FaceDetector
from engines.faces.detector import (INPUT_NAME, MODEL_PATH, OUTPUTS, input_size, prepare_centerface,
                                    prepared_model_path, tensorrt_profile)

DATA = data_root()
REPO = Path(__file__).resolve().parents[1]
needs_faces = pytest.mark.skipif(not (DATA / "faces").is_dir(), reason=f"SHARED DATA MISSING: {DATA / 'faces'} (set EARSHOT_DATA)")
needs_video = pytest.mark.skipif(not (DATA / "video").is_dir(), reason=f"SHARED DATA MISSING: {DATA / 'video'} (set EARSHOT_DATA)")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_blank_image_has_no_face(detector):
    d = detector.detect(np.full((240, 320, 3), 127, np.uint8))
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.landmarks.shape == (0, 5, 2)


@needs_faces
def test_real_photos(detector):
    import cv2

    paths = sorted((DATA / "faces").glob("*.jpg"))
    found = [len(detector.detect(cv2.imread(str(p)))) for p in paths]
    assert np.mean(np.array(found) >= 1) >= 0.95
    couple = FaceDetector(max_side_px=640).detect(cv2.imread(str(DATA / "faces" / "couple.jpg")))
    assert len(couple) == 2
    for box, lm in zip(couple.boxes, couple.landmarks):
        mouth_y = lm[3:, 1].mean()
        assert box[1] + 0.5 * (box[3] - box[1]) < mouth_y < box[3], "mouth corners in the lower half of the box"
        assert box[0] < lm[:, 0].min() and lm[:, 0].max() < box[2]


@needs_video
def test_split_screen_video_two_faces(detector):
    import av
    import cv2

    counts = []
    with av.open(str(DATA / "video" / "two_speakers_split_screen.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 10:
                continue
            img = cv2.resize(frame.to_ndarray(format="bgr24"), (640, 360))
            d = detector.detect(img)
            counts.append(int(np.sum(d.boxes[:, 2] - d.boxes[:, 0] > 40)))  # the two debaters, not bystanders
            if len(counts) == 12:
                break
    assert sum(c == 2 for c in counts) >= 10, counts


def _match(det_boxes: np.ndarray, gt: np.ndarray) -> bool:
    cx, cy = (det_boxes[:, 0] + det_boxes[:, 2]) / 2, (det_boxes[:, 1] + det_boxes[:, 3]) / 2
    return bool(np.any((cx > gt[0]) & (cx < gt[2]) & (cy > gt[1]) & (cy < gt[3])))


def test_detector_finds_the_shipped_demo_faces(detector):
    import av

    ann = __import__("json").loads((REPO / "demo" / "demo.json").read_text())
    gt = np.array([o["boxes_xyxy"] for o in ann["objects"]]).transpose(1, 0, 2)  # (T, K, 4)
    hits, total = 0, 0
    with av.open(str(REPO / "demo" / "demo.mp4")) as container:
        for t, frame in enumerate(container.decode(video=0)):
            if t % 5:
                continue
            d = detector.detect(frame.to_ndarray(format="bgr24"))
            for k in range(gt.shape[1]):
                total += 1
                hits += _match(d.boxes, gt[t, k]) if len(d) else 0
    assert hits / total >= 0.8, f"demo faces found in {hits}/{total}"


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng not installed")
def test_detector_finds_generated_faces_where_annotated(detector):
    from lab.corpus.separation_scenes import SeparationConfig, make_separation_clip

    cfg = SeparationConfig(include_librispeech=False, duration_s=1.0, num_speakers=(2, 3), photo_prob=0.0)
    hits, total, false = 0, 0, 0
    for seed in range(4):
        clip = make_separation_clip(seed, cfg)
        for t in range(0, clip.num_frames, 5):
            d = detector.detect(clip.frames[t])
            for k in range(clip.boxes.shape[1]):
                total += 1
                hits += _match(d.boxes, clip.boxes[t, k]) if len(d) else 0
            for box in d.boxes:  # every detection must be one of the annotated faces
                false += not _match(clip.boxes[t], box) and not any(
                    _match(box[None], g) for g in clip.boxes[t])
    print(f"generated faces found: {hits}/{total}, unmatched detections {false}")
    assert hits / total >= 0.75
    assert false <= 0.05 * total


# ------------------------------------------------------------- the prepared model and its engine path
def _old_in_memory_session(model_path: Path, num_threads: int = 1):
    """The detector's ONNX Runtime session before issue #7 (rewrite in memory, own session), verbatim."""
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(model_path))
    input_dims = {
        node.name: [d.dim_value for d in node.type.tensor_type.shape.dim] for node in model.graph.input
    }
    input_dims["input.1"] = ["B", 3, "H", "W"]
    output_dims = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                   "540": ["B", 10, "h", "w"]}
    model = update_inputs_outputs_dims(model, input_dims, output_dims)
    weights = {init.name for init in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


class _SessionEngine:
    """An ``Engine.run``-shaped wrapper around a bare ONNX Runtime session."""

    def __init__(self, session) -> None:
        self.session = session

    def run(self, inputs: dict) -> dict:
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), inputs)))


def _parity_images() -> list[tuple[str, np.ndarray]]:
    """Demo frames (always shipped) and, where the shared data is present, real photos."""
    import av
    import cv2

    images = []
    with av.open(str(REPO / "demo" / "demo.mp4")) as container:
        for t, frame in enumerate(container.decode(video=0)):
            if t % 45 == 0:
                images.append((f"demo frame {t}", frame.to_ndarray(format="bgr24")))
    for name in ("couple.jpg", "selfie-many-people.jpg", "img10.jpg"):
        if (DATA / "faces" / name).is_file():
            images.append((name, cv2.imread(str(DATA / "faces" / name))))
    images.append(("small portrait", images[0][1][40:190, 250:350].copy()))  # below max_side_px: no downscale
    return images


def _assert_same_detections(got, want, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} faces, reference {len(want)}"
    for field in ("boxes", "scores", "landmarks"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), atol=1e-5, rtol=0, err_msg=f"{what}: {field}")


@pytest.mark.parametrize("max_side_px", [320, 640])
def test_engine_path_matches_the_old_in_memory_rewrite(max_side_px):
    """Same network outputs and detections as the pre-#7 detector's own session (measured: bit-identical)."""
    import cv2

    detector = FaceDetector(max_side_px=max_side_px)
    assert detector.engine.backend == "onnxruntime" and detector.engine.device == "cpu"
    reference = FaceDetector(max_side_px=max_side_px)
    reference.engine = _SessionEngine(_old_in_memory_session(MODEL_PATH))
    faces = 0
    for what, image in _parity_images():
        in_h, in_w = input_size(*image.shape[:2], max_side_px)
        blob = cv2.dnn.blobFromImage(image, 1.0, (in_w, in_h), (0, 0, 0), swapRB=True, crop=False)
        got, want = detector.engine.run({INPUT_NAME: blob}), reference.engine.run({INPUT_NAME: blob})
        for name in OUTPUTS:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=f"{what}: output {name}")
        found = detector.detect(image)
        _assert_same_detections(found, reference.detect(image), what)
        faces += len(found)
    assert faces >= 5, "the comparison must include real detections"


def test_prepared_model_is_deterministic_idempotent_and_dynamic(tmp_path):
    import onnx

    first = prepare_centerface(MODEL_PATH, tmp_path / "a.onnx")
    assert prepare_centerface(MODEL_PATH, tmp_path / "b.onnx").read_bytes() == first.read_bytes()
    assert prepare_centerface(first, tmp_path / "c.onnx").read_bytes() == first.read_bytes()
    model = onnx.load(str(first))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in model.graph.input] == [(INPUT_NAME, ["batch", 3, "height", "width"])]
    assert {o.name: dims(o) for o in model.graph.output} == {
        name: ["batch", channels, "height_4", "width_4"] for name, channels in OUTPUTS.items()}
    assert not model.graph.value_info
    used = {name for node in model.graph.node for name in node.input}
    assert all(init.name in used for init in model.graph.initializer)

    cached = prepared_model_path(cache_dir=tmp_path / "cache")
    assert cached.read_bytes() == first.read_bytes()
    stamp = cached.stat().st_mtime_ns
    assert prepared_model_path(cache_dir=tmp_path / "cache") == cached and cached.stat().st_mtime_ns == stamp
    # the shipped file stays the unmodified upstream copy the model card names
    assert file_sha256(MODEL_PATH) in (MODEL_PATH.parent / "MODEL_CARD.md").read_text()


def test_missing_model_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="face detector model missing"):
        FaceDetector(model_path=tmp_path / "nope.onnx", cache_dir=tmp_path)


@pytest.mark.parametrize("max_side_px", [320, 480, 640])
def test_network_input_size_stays_inside_the_tensorrt_profile(max_side_px):
    """Every size the detector feeds is inside its TensorRT profile, and as before except the float bug.

    The old ``ceil(w * (m / w) / 32)`` rounded up past ``m`` for some sizes (e.g. 525 px wide at 320);
    nothing else changed.
    """
    low, _opt, high = tensorrt_profile(max_side_px)[INPUT_NAME]
    for w in range(1, 2200, 3):
        for h in {w, w // 2 + 1, 37, 720, 1080}:
            in_h, in_w = input_size(h, w, max_side_px)
            assert in_h % 32 == 0 and in_w % 32 == 0
            assert low[2] <= in_h <= high[2] and low[3] <= in_w <= high[3], (h, w)
            big = max(h, w)
            scale = min(1.0, max_side_px / big)
            for side, new in ((h, in_h), (w, in_w)):
                old = int(np.ceil(side * scale / 32) * 32)
                exact_multiple = big > max_side_px and (side * max_side_px) % (32 * big) == 0
                assert new == old or (exact_multiple and old == new + 32), (h, w, side, old, new)


def test_detector_on_tensorrt_builds_a_dynamic_hw_profile(tmp_path, monkeypatch):
    """FaceDetector(backend="tensorrt") through engines.loader.load, on the fake TensorRT (ORT inside)."""
    import sys

    from engines import backends
    from tests.fake_tensorrt import FakeCuda, FakeTensorRT

    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("engines.backends.tensorrt_backend.CudaRuntime", lambda device_id=0: cuda)

    on_trt = FaceDetector(backend="tensorrt", num_threads=4, cache_dir=tmp_path)  # threads: CPU only, dropped
    on_cpu = FaceDetector(backend="onnxruntime", cache_dir=tmp_path)
    assert on_trt.engine.backend == "tensorrt"
    assert on_trt.engine.inputs[0].shape == (None, 3, None, None)
    assert trt.builds[0]["profiles"] == [{INPUT_NAME: ((1, 3, 32, 32), (1, 3, 192, 320), (1, 3, 320, 320))}]
    for what, image in _parity_images():  # several input sizes: one CUDA graph each
        _assert_same_detections(on_trt.detect(image), on_cpu.detect(image), what)
    on_trt.close()
    assert cuda.memory == {} and cuda.closed
