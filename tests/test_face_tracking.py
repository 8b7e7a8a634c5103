"""Face tracking (stable IDs through occlusions) and lip features, on boxes and on drawn faces."""

from __future__ import annotations

import numpy as np
import pytest

from engines.faces.lip_features import LIP_DIM, FEATURE_NAMES, LipFrontEnd
from engines.faces.tracker import FaceTracker, iou_matrix


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]], atol=1e-6)


def test_ids_survive_missed_detections_and_expire_after_max_missed() -> None:
    tracker = FaceTracker(max_missed=5, min_hits=2)
    left, right = np.array([10, 10, 60, 70.0]), np.array([200, 10, 250, 70.0])
    seen = []
    for t in range(30):
        boxes = [left + [t, 0, t, 0]]
        if not 10 <= t < 14:  # the right face is hidden for 4 frames
            boxes.append(right - [t, 0, t, 0])
        seen.append({int(tr.track_id): tr.detection >= 0 for tr in tracker.update(np.array(boxes))})
    assert seen[0] == {}, "a track is reported only after min_hits matches"
    assert set(seen[5]) == {1, 2} and set(seen[20]) == {1, 2}, "same two IDs before and after the miss"
    assert seen[12] == {1: True, 2: False}, "the hidden face is held, flagged not visible"
    for t in range(10):  # now it leaves for good: its ID ends after max_missed frames
        tracker.update(np.array([left]))
    assert [tr.track_id for tr in tracker.tracks] == [1]


def test_faces_that_swap_sides_slowly_keep_their_ids() -> None:
    tracker = FaceTracker()
    ids = []
    for t in range(40):
        a = np.array([20 + 4 * t, 20, 70 + 4 * t, 80.0])
        b = np.array([200 - 4 * t, 40, 250 - 4 * t, 100.0])
        ids.append([int(tr.track_id) for tr in tracker.update(np.stack([a, b]))])
    # after crossing, the face moving right (ID 1) is on the right
    final = {tr.track_id: tr.box[0] for tr in tracker.tracks}
    assert final[1] > final[2]


@pytest.fixture(scope="module")
def occluded_clip() -> tuple[np.ndarray, list[int]]:
    """Two drawn talking faces in a 320×180 frame; a grey "hand" covers the right one for 6 frames."""
    from lab.corpus.face_drawing import FacePose, MouthState, draw_face
    from lab.corpus.talking_faces import detectable_style

    rng = np.random.default_rng(3)
    styles = [detectable_style(rng), detectable_style(rng)]
    frames, hidden = [], list(range(15, 21))
    for t in range(30):
        img = np.full((180, 320, 3), 150, np.uint8)
        mouth = MouthState(0.5 + 0.5 * np.sin(t / 2), 0.5)
        draw_face(img, FacePose(80 + t * 0.5, 90, 45), styles[0], mouth)
        draw_face(img, FacePose(240 - t * 0.5, 90, 45), styles[1], MouthState(0.1, 0.5))
        if t in hidden:
            img[20:170, 180:310] = (90, 110, 120)
        frames.append(img)
    return np.stack(frames), hidden


def test_face_ids_stable_through_short_occlusion(occluded_clip) -> None:
    frames, hidden = occluded_clip
    front_end = LipFrontEnd()
    results = [front_end.process(f) for f in frames]
    def id_of(r, side):  # the track whose box centre is on that side of the frame
        xs = (r.boxes[:, 0] + r.boxes[:, 2]) / 2
        match = [int(i) for i, x in zip(r.track_ids, xs) if (x < 160) == (side == "left")]
        return match[0] if match else None
    before = (id_of(results[10], "left"), id_of(results[10], "right"))
    after = (id_of(results[28], "left"), id_of(results[28], "right"))
    assert None not in before and before[0] != before[1]
    assert after == before, "IDs must not change through the occlusion"
    during = results[hidden[2]]
    right = list(during.track_ids).index(before[1])
    assert not during.visible[right], "the occluded face is held, not detected"
    assert during.lip_features.shape == (2, LIP_DIM) and during.lip_features[right, -1] == 0.0


def test_lip_motion_follows_the_moving_mouth(occluded_clip) -> None:
    """The left face's mouth moves every frame, the right one's is still: motion must say so."""
    frames, hidden = occluded_clip
    front_end = LipFrontEnd()
    motion = FEATURE_NAMES.index("motion")
    left, right = [], []
    for t, frame in enumerate(frames[:14]):
        r = front_end.process(frame)
        if len(r.track_ids) == 2 and t > 2:
            order = np.argsort((r.boxes[:, 0] + r.boxes[:, 2]) / 2)
            left.append(r.lip_features[order[0], motion])
            right.append(r.lip_features[order[1], motion])
    assert np.mean(left) > 1.5 * np.mean(right), (np.mean(left), np.mean(right))
