"""Loss and metric curves as a PNG, drawn with OpenCV (already a dependency; no plotting library)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

COLOURS = [(200, 80, 30), (40, 150, 40), (30, 60, 220), (150, 40, 150), (0, 160, 200), (90, 90, 90)]


def _panel(title: str, series: dict[str, tuple[list[float], list[float]]], w: int = 560, h: int = 360) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv if np.isfinite(y)]
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
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
        cv2.putText(img, f"{y:.3g}", (2, sy(y) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x = x0 + frac * (x1 - x0)
        cv2.putText(img, f"{x:.0f}", (sx(x) - 10, h - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "step", (w // 2, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, (xv, yv)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = np.array([(sx(x), sy(y)) for x, y in zip(xv, yv) if np.isfinite(y)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        cv2.putText(img, name, (w - right - 150, top + 16 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    return img


def save_curves(path: Path, history: dict[str, list[float]], title: str) -> Path:
    """Two panels: training losses (by step) and validation metrics (by step)."""
    steps = history.get("step", [])
    losses = {k: (steps, history[k]) for k in ("loss", "unsup", "sup") if history.get(k)}
    val_steps = history.get("val_step", [])
    metrics = {k: (val_steps, history[k]) for k in ("val_ciou05", "val_auc", "val_pointing", "val_fixed_ciou05")
               if history.get(k)}
    img = np.concatenate([_panel(f"{title}: training loss", losses), _panel(f"{title}: validation", metrics)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path
