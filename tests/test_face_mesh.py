"""FaceMesh (MediaPipe face landmarks as ONNX) on a real talking VoxCeleb clip (shared data) and on the
shipped demo clip; mouth_features; input checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines.faces.face_mesh import LIPS_INNER, LIPS_OUTER, FaceMesh, mouth_features

REPO = Path(__file__).resolve().parents[1]
# the project's data convention ($EARSHOT_DATA, else ../shared/data), kept local so this test does not
# depend on where the corpus code lives
DATA = Path(os.environ.get("EARSHOT_DATA") or REPO.parent / "shared" / "data")
TALKING = DATA / "video" / "real" / "voxceleb" / "id01" / "014.mp4"  # 10 s, one speaker talking throughout
needs_talking = pytest.mark.skipif(not TALKING.is_file(), reason=f"SHARED DATA MISSING: {TALKING} (set EARSHOT_DATA)")


def frames_of(path: Path, every: int = 1) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for i, f in enumerate(container.decode(video=0)) if i % every == 0]


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh()


@pytest.fixture(scope="module")
def detector():
    from engines.faces import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def talking(mesh, detector):
    """(frames, first detected box per frame or None, mesh result per frame or None) over the clip."""
    frames = frames_of(TALKING)
    boxes = [d.boxes[0] if len(d) else None for d in map(detector.detect, frames)]
    return frames, boxes, [mesh(f, b) if b is not None else None for f, b in zip(frames, boxes)]


@needs_talking
def test_mouth_inside_detected_face(talking):
    frames, boxes, meshes = talking
    lips = list(LIPS_OUTER + LIPS_INNER)
    inside = [m is not None and bool(np.all((m.landmarks[0, lips, :2] >= b[:2]) & (m.landmarks[0, lips, :2] <= b[2:])))
              for b, m in zip(boxes, meshes)]
    assert np.mean(inside) >= 0.95, f"lips inside the face box on only {np.mean(inside):.1%} of {len(frames)} frames"
    present = [m is not None and m.presence[0] > 0.5 for m in meshes]
    assert np.mean(present) >= 0.95
    m = next(m for m in meshes if m is not None).landmarks[0]
    assert m[13, 1] < m[14, 1] and m[61, 0] < m[291, 0] and m[33, 0] < m[263, 0], "index meanings as documented"


@needs_talking
def test_lip_opening_follows_speech_not_jitter(talking, mesh):
    """Over 10 s of speech the opening spreads (measured std 0.055 of the eye distance, closed ~0.01
    to open ~0.25); re-cropping one frame with its box moved by up to 3 px moves it by only ~0.009."""
    frames, boxes, meshes = talking
    found = [i for i, m in enumerate(meshes) if m is not None]
    opening = np.array([mouth_features(meshes[i].landmarks[0])["opening"] for i in found])
    assert opening.std() > 0.03, f"opening barely varies over a talking clip: std {opening.std():.4f}"
    assert np.percentile(opening, 10) < 0.05 and np.percentile(opening, 90) > 0.12, "closed and open frames both seen"
    i = found[int(np.argmax(opening))]  # the widest-open frame: where a loose crop would move the lips most
    rng = np.random.default_rng(0)
    moved = [boxes[i] + rng.uniform(-3, 3, 4) for _ in range(10)]
    jitter = [mouth_features(mesh(frames[i], box).landmarks[0])["opening"] for box in moved]
    assert opening.std() > 3 * np.std(jitter), f"speech std {opening.std():.4f} vs crop jitter {np.std(jitter):.4f}"


def test_demo_faces_batched_like_single(mesh, detector):
    frame = frames_of(REPO / "demo" / "demo.mp4", every=30)[1]
    boxes = detector.detect(frame).boxes
    assert len(boxes) == 2, "the demo clip has two faces"
    both = mesh(frame, boxes)
    assert both.landmarks.shape == (2, 468, 3) and np.all(both.presence > 0.9)
    for k in range(2):
        one = mesh(frame, boxes[k])
        assert np.abs(one.landmarks[0] - both.landmarks[k]).max() < 1e-2
        lips = both.landmarks[k, list(LIPS_OUTER), :2]
        assert np.all((lips > boxes[k, :2]) & (lips < boxes[k, 2:])), "each face's lips inside its own box"


def test_no_face_and_no_boxes(mesh):
    grey = np.full((240, 320, 3), 127, np.uint8)
    assert mesh(grey, [100, 60, 220, 200]).presence[0] < 0.1, "a blank crop must not read as a face"
    empty = mesh(grey, np.zeros((0, 4)))
    assert empty.landmarks.shape == (0, 468, 3) and empty.presence.shape == (0,)


def test_mouth_features_shapes():
    lm = np.zeros((2, 5, 468, 3))
    lm[..., 263, 0] = 10.0  # eyes 10 px apart, level
    lm[..., 14, 1] = 2.0  # lips 2 px apart
    lm[..., 291, 0] = 6.0
    f = mouth_features(lm)
    assert f["opening"].shape == (2, 5) and np.allclose(f["opening"], 0.2) and np.allclose(f["width"], 0.6)
    assert f["contour"].shape == (2, 5, 40, 2)
    assert np.allclose(f["contour"][0, 0, 0], [-0.3, 0.0]), "starts at the right mouth corner, around the mouth centre"


@pytest.mark.parametrize("frame, box, message", [
    (np.zeros((240, 320, 3), np.float32), [10, 10, 100, 100], "uint8"),
    (np.zeros((240, 320), np.uint8), [10, 10, 100, 100], "HxWx3"),
    (np.zeros((240, 320, 4), np.uint8), [10, 10, 100, 100], "HxWx3"),
    (np.zeros((240, 320, 3), np.uint8), [50, 50, 50, 100], "x2 > x1"),  # empty box
    (np.zeros((240, 320, 3), np.uint8), [50, 50, 100, 40], "y2 > y1"),
    (np.zeros((240, 320, 3), np.uint8), [50, 50, np.nan, 100], "finite"),
    (np.zeros((240, 320, 3), np.uint8), [50, 50, 100], "shape"),
])
def test_bad_input_is_a_clear_error(mesh, frame, box, message):
    with pytest.raises(ValueError, match=message):
        mesh(frame, box)


def test_mouth_features_rejects_other_landmarks():
    with pytest.raises(ValueError, match="468"):
        mouth_features(np.zeros((5, 2)))  # CenterFace's 5 points are not a face mesh
