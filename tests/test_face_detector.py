"""FaceDetector on real photos and video (shared data) and on the generated talking faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.data.paths import data_root
from engines.faces import FaceDetector

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
    from engines.data.separation import SeparationConfig, make_separation_clip

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
