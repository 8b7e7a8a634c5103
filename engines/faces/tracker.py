"""Face tracking: stable IDs across frames and through short occlusions.

Why this simple tracker: faces in a video call or interview move slowly and rarely cross, so
greedy matching on IoU (with a centre-distance fallback for fast moves) is enough, and it costs
microseconds. The separator keys its per-face state (GRU memory, ISTFT) on the track ID, so an ID
must not change when the detector misses a face for a few frames: a missed track is *held* at its
last box (moved by its recent velocity) for up to ``max_missed`` frames and comes back with the same
ID when a detection matches it again. A track is reported only after ``min_hits`` matches, so a
one-frame false positive never starts a voice stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) × (M, 4) xyxy boxes → (N, M) intersection over union."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)).astype(np.float32)


@dataclass
class Track:
    """One face over time. ``detection`` is the index into the current frame's detections, or -1
    when the face is held through a miss."""

    track_id: int
    box: np.ndarray
    landmarks: np.ndarray
    hits: int = 1
    missed: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    detection: int = -1


class FaceTracker:
    """Greedy IoU/centre matching with held tracks. ``update(boxes, landmarks)`` once per frame."""

    def __init__(self, iou_threshold: float = 0.2, centre_factor: float = 0.6, max_missed: int = 12,
                 min_hits: int = 2) -> None:
        self.iou_threshold = iou_threshold
        self.centre_factor = centre_factor  # a match may also be a centre within this × box size
        self.max_missed = max_missed  # 12 frames = 0.48 s at 25 fps: a hand passing, a blink of the detector
        self.min_hits = min_hits
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, landmarks: np.ndarray | None = None) -> list[Track]:
        """Match this frame's detections to tracks; return the reported tracks, oldest ID first."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if landmarks is None:
            landmarks = np.zeros((len(boxes), 5, 2), np.float32)
        for track in self.tracks:
            track.detection = -1
            track.box = track.box + track.velocity  # predict: constant velocity, damped below
        pairs = self._match(boxes)
        matched = set()
        for ti, di in pairs:
            track = self.tracks[ti]
            new_box = boxes[di]
            track.velocity = 0.5 * track.velocity + 0.5 * (new_box - (track.box - track.velocity))
            track.box, track.landmarks = new_box.copy(), landmarks[di].copy()
            track.hits += 1
            track.missed = 0
            track.detection = di
            matched.add(di)
        for track in self.tracks:
            if track.detection < 0:
                track.missed += 1
                track.velocity *= 0.5
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for di in range(len(boxes)):
            if di not in matched:
                self.tracks.append(Track(self._next_id, boxes[di].copy(), landmarks[di].copy(), detection=di))
                self._next_id += 1
        return [t for t in self.tracks if t.hits >= self.min_hits]

    def _match(self, boxes: np.ndarray) -> list[tuple[int, int]]:
        """Greedy assignment by score: IoU, or a centre-distance score when boxes do not overlap."""
        if not self.tracks or not len(boxes):
            return []
        prev = np.stack([t.box for t in self.tracks])
        score = iou_matrix(prev, boxes)
        centre_p = (prev[:, :2] + prev[:, 2:]) / 2
        centre_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        size = np.maximum(prev[:, 2] - prev[:, 0], prev[:, 3] - prev[:, 1])[:, None]
        dist = np.linalg.norm(centre_p[:, None] - centre_d[None], axis=-1) / np.maximum(size, 1.0)
        near = np.where(dist < self.centre_factor, self.iou_threshold * (1 - dist / self.centre_factor), 0.0)
        score = np.maximum(score, near)
        pairs = []
        while True:
            ti, di = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[ti, di] < self.iou_threshold * 0.5 or score[ti, di] <= 0:
                break
            pairs.append((int(ti), int(di)))
            score[ti, :] = -1
            score[:, di] = -1
        return pairs
