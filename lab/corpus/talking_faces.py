"""Talking faces over time: a style, a moving pose and a speech-driven mouth, frame by frame."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lab.corpus.face_drawing import FacePose, FaceStyle, MouthState, draw_face, face_box
from lab.corpus.mouth_tracks import MouthTrack
from lab.corpus.render import PoseWalk


@dataclass
class TalkingFace:
    """One face in a clip: where it rests, how it looks and how its mouth moves."""

    style: FaceStyle
    cx: float
    cy: float
    half_height_px: float
    track: MouthTrack
    walk: PoseWalk
    base_roll_deg: float = 0.0
    base_yaw: float = 0.0

    def pose_at(self) -> FacePose:
        dx, dy, roll, yaw, log_s = self.walk.step()
        s = self.half_height_px * float(np.exp(log_s))
        return FacePose(self.cx + dx * s, self.cy + dy * s, s, self.base_roll_deg + float(roll),
                        float(np.clip(self.base_yaw + yaw, -0.8, 0.8)))

    def draw(self, img: np.ndarray, t: int) -> np.ndarray:
        """Draw frame ``t`` and return its ground-truth box."""
        pose = self.pose_at()
        mouth = MouthState(float(self.track.opening[t]), float(self.track.width[t]))
        draw_face(img, pose, self.style, mouth)
        return face_box(pose, self.style, mouth)


@functools.lru_cache(maxsize=1)
def _detector():
    from engines.faces import FaceDetector

    return FaceDetector(score_threshold=0.5)


def detectable_style(rng: np.random.Generator, tries: int = 12, check: bool = True) -> FaceStyle:
    """Draw a face style the face detector finds in a frontal portrait.

    Why: the separation model gets lip features only for faces the live detector finds; a style
    it never finds would be wasted training data (and untestable). About 1 in 3 random styles pass.
    Deterministic: the detector is, so the accepted style depends only on ``rng``.
    """
    style = FaceStyle.random(rng)
    if not check:
        return style
    for _ in range(tries):
        if _found_at_all_scales(style):
            return style
        style = FaceStyle.random(rng)
    return style


def _found_at_all_scales(style: FaceStyle) -> bool:
    """Detected as a frontal portrait at face half-heights of 30, 45 and 60 px (detector input).

    Drawn faces lack skin texture, so CenterFace finds some of them at one scale and not another;
    checking three scales keeps the styles that survive the sizes clips use.
    """
    for half in (30, 45, 60):
        side = 4 * half
        img = np.full((side, side, 3), 128, np.uint8)
        draw_face(img, FacePose(side / 2, side * 0.45, half), style, MouthState(0.2, 0.5))
        if len(_detector().detect(img)) == 0:
            return False
    return True
