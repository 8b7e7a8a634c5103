"""Loss and metric curves as a PNG (`media.charts`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from media.charts import line_chart


def save_curves(path: Path, history: dict[str, list[float]], title: str) -> Path:
    """Two panels: training losses (by step) and validation metrics (by step)."""
    steps = history.get("step", [])
    losses = {k: (steps, history[k]) for k in ("loss", "unsup", "sup") if history.get(k)}
    val_steps = history.get("val_step", [])
    metrics = {k: (val_steps, history[k]) for k in ("val_ciou05", "val_auc", "val_pointing", "val_fixed_ciou05")
               if history.get(k)}
    img = np.concatenate([line_chart(f"{title}: training loss", losses),
                          line_chart(f"{title}: validation", metrics)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path
