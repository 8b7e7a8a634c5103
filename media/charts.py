"""Line charts as images, drawn with OpenCV (already a dependency; no plotting library): training
curves in the lab, latency against load in the benchmarks."""

from __future__ import annotations

import cv2
import numpy as np

COLOURS = [(200, 80, 30), (40, 150, 40), (30, 60, 220), (150, 40, 150), (0, 160, 200), (90, 90, 90)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_chart(title: str, series: dict[str, tuple[list[float], list[float]]], *, x_label: str = "step",
               y_label: str = "", hline: tuple[float, str] | None = None, w: int = 560, h: int = 360) -> np.ndarray:
    """One panel (BGR, h × w): each named series a polyline with its points marked when few, axes with
    their ends and middle labelled; ``hline`` (y, label) a dashed reference line (a deadline, a goal)."""
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv if np.isfinite(y)]
    if hline is not None:
        ys.append(hline[0])
    cv2.putText(img, title, (left, 20), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if not xs or not ys:
        return img
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    sx = lambda x: int(left + (x - x0) / (x1 - x0) * (w - left - right))  # noqa: E731
    sy = lambda y: int(h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))  # noqa: E731
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        cv2.putText(img, f"{y:.3g}", (2, sy(y) + 4), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x = x0 + frac * (x1 - x0)
        cv2.putText(img, f"{x:.0f}", (sx(x) - 10, h - bottom + 15), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, x_label, (w // 2, h - 8), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if y_label:
        cv2.putText(img, y_label, (2, h - 8), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if hline is not None:
        y = sy(hline[0])
        for x in range(left, w - right, 12):
            cv2.line(img, (x, y), (min(x + 6, w - right), y), (0, 0, 200), 1, cv2.LINE_AA)
        cv2.putText(img, hline[1], (left + 4, y + 14 if y < top + 20 else y - 4), _FONT, 0.4, (0, 0, 200), 1,
                    cv2.LINE_AA)
    for i, (name, (xv, yv)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = np.array([(sx(x), sy(y)) for x, y in zip(xv, yv) if np.isfinite(y)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        if 0 < len(pts) <= 30:
            for p in pts:
                cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (w - right - 150, top + 16 + 16 * i), _FONT, 0.45, colour, 1, cv2.LINE_AA)
    return img
