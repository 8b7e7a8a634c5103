"""Drawn sound-making objects for localization scenes (besides talking faces).

Each draws itself at a centre and size, with an ``activity`` in [0, 1] that is the object's own
sound energy in this frame: a sounding instrument's strings blur, a loudspeaker cone pumps, a
bike's wheels turn, an appliance shakes. A silent distractor of the same family looks the same but
stays still, so "which one sounds" is decided by motion in sync with the audio, as in real video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

LINE = cv2.LINE_AA


@dataclass(frozen=True)
class ObjectLook:
    """Colours and proportions of one object instance."""

    body_bgr: tuple[int, int, int]
    accent_bgr: tuple[int, int, int]
    aspect: float

    @staticmethod
    def random(rng: np.random.Generator) -> "ObjectLook":
        return ObjectLook(tuple(int(c) for c in rng.integers(30, 230, 3)),  # type: ignore[arg-type]
                          tuple(int(c) for c in rng.integers(0, 256, 3)),  # type: ignore[arg-type]
                          float(rng.uniform(0.85, 1.15)))


def draw_guitar(img, cx, cy, size, look: ObjectLook, activity: float, t: int, rng) -> None:
    s = size
    body = look.body_bgr
    cv2.line(img, (int(cx), int(cy - 0.1 * s)), (int(cx), int(cy - 0.95 * s)), (40, 60, 90), max(2, int(0.09 * s)), LINE)
    cv2.rectangle(img, (int(cx - 0.07 * s), int(cy - 1.05 * s)), (int(cx + 0.07 * s), int(cy - 0.9 * s)), (30, 40, 60), -1)
    cv2.ellipse(img, (int(cx), int(cy + 0.35 * s)), (int(0.42 * s * look.aspect), int(0.38 * s)), 0, 0, 360, body, -1, LINE)
    cv2.ellipse(img, (int(cx), int(cy - 0.1 * s)), (int(0.32 * s * look.aspect), int(0.28 * s)), 0, 0, 360, body, -1, LINE)
    cv2.circle(img, (int(cx), int(cy + 0.05 * s)), max(2, int(0.1 * s)), (20, 20, 20), -1, LINE)
    amp = 0.03 * s * activity
    for i in range(4):  # strings: they blur sideways when played
        x = cx + (i - 1.5) * 0.025 * s + amp * math.sin(1.7 * t + i)
        cv2.line(img, (int(x), int(cy - 0.95 * s)), (int(x), int(cy + 0.5 * s)), (210, 210, 210), 1, LINE)


def draw_loudspeaker(img, cx, cy, size, look: ObjectLook, activity: float, t: int, rng) -> None:
    s = size
    w, h = 0.55 * s * look.aspect, 0.9 * s
    cv2.rectangle(img, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), look.body_bgr, -1)
    cv2.rectangle(img, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), (20, 20, 20), max(1, int(0.03 * s)))
    pump = 1.0 + 0.12 * activity * (0.5 + 0.5 * math.sin(2.3 * t))
    cv2.circle(img, (int(cx), int(cy + 0.3 * s)), int(0.38 * s), (30, 30, 30), -1, LINE)
    cv2.circle(img, (int(cx), int(cy + 0.3 * s)), int(0.26 * s * pump), look.accent_bgr, -1, LINE)
    cv2.circle(img, (int(cx), int(cy + 0.3 * s)), max(1, int(0.08 * s * pump)), (15, 15, 15), -1, LINE)
    cv2.circle(img, (int(cx), int(cy - 0.5 * s)), int(0.15 * s), (30, 30, 30), -1, LINE)


def draw_appliance(img, cx, cy, size, look: ObjectLook, activity: float, t: int, rng) -> None:
    s = size
    shake = 0.02 * s * activity
    cx = cx + shake * math.sin(3.1 * t)
    cy = cy + shake * math.cos(2.3 * t)
    w, h = 0.75 * s * look.aspect, 0.85 * s
    cv2.rectangle(img, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), look.body_bgr, -1)
    cv2.rectangle(img, (int(cx - w), int(cy - h)), (int(cx + w), int(cy - 0.6 * h)), look.accent_bgr, -1)
    cv2.circle(img, (int(cx), int(cy + 0.15 * s)), int(0.45 * s), (60, 60, 60), -1, LINE)
    cv2.circle(img, (int(cx), int(cy + 0.15 * s)), int(0.36 * s), (150, 120, 90), -1, LINE)
    # laundry/dishes tumbling inside when running
    ang = t * 0.6 * activity
    for k in range(3):
        a = ang + k * 2.1
        centre = (int(cx + 0.18 * s * math.cos(a)), int(cy + 0.15 * s + 0.18 * s * math.sin(a)))
        cv2.circle(img, centre, max(1, int(0.08 * s)), look.accent_bgr, -1, LINE)


def draw_bike(img, cx, cy, size, look: ObjectLook, activity: float, t: int, rng) -> None:
    s = size
    r = 0.4 * s
    lw = max(1, int(0.05 * s))
    back, front = (int(cx - 0.55 * s), int(cy + 0.35 * s)), (int(cx + 0.55 * s), int(cy + 0.35 * s))
    seat, bar, crank = (int(cx - 0.2 * s), int(cy - 0.35 * s)), (int(cx + 0.4 * s), int(cy - 0.45 * s)), (int(cx), int(cy + 0.35 * s))
    ang = t * 0.9 * activity
    for c in (back, front):
        cv2.circle(img, c, int(r), (25, 25, 25), lw + 1, LINE)
        for k in range(3):  # spokes turn when the bike is ridden
            a = ang + k * math.pi / 3
            d = (int(r * math.cos(a)), int(r * math.sin(a)))
            cv2.line(img, (c[0] - d[0], c[1] - d[1]), (c[0] + d[0], c[1] + d[1]), (150, 150, 150), 1, LINE)
    for p, q in ((back, crank), (crank, seat), (seat, back), (crank, bar), (bar, front), (seat, bar)):
        cv2.line(img, p, q, look.body_bgr, lw, LINE)
    cv2.ellipse(img, (seat[0], seat[1] - lw), (int(0.14 * s), max(1, int(0.04 * s))), 0, 0, 360, (20, 20, 20), -1, LINE)


DRAWERS = {"guitar": draw_guitar, "loudspeaker": draw_loudspeaker, "appliance": draw_appliance, "bike": draw_bike}
