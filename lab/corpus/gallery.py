"""Contact sheet of generated scenes with their ground truth drawn on, to eyeball the corpus."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lab.corpus.clip import Clip

SOUNDING_BGR = (0, 230, 0)
SILENT_BGR = (0, 0, 230)


def annotate(clip: Clip, t: int) -> np.ndarray:
    """Frame ``t`` with boxes (green sounding, red silent), class labels and the sounding map tint."""
    img = clip.frames[t].copy()
    if clip.masks is not None:
        tint = img.copy()
        tint[clip.masks[t] > 0] = (0, 200, 255)
        img = cv2.addWeighted(img, 0.65, tint, 0.35, 0)
    for k, cls in enumerate(clip.classes):
        x0, y0, x1, y1 = clip.boxes[t, k].round().astype(int)
        colour = SOUNDING_BGR if clip.sounding[k] else SILENT_BGR
        label = cls
        if clip.mouth is not None and k < clip.mouth.shape[1]:
            label += f" open {clip.mouth[t, k, 0]:.2f}"
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 1)
        cv2.putText(img, label, (x0 + 2, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    meta = clip.meta
    text = f"{clip.kind} seed {meta.get('seed')} {meta.get('split', '')}"
    if meta.get("snr_db") is not None:
        text += f" snr {meta['snr_db']:.0f} dB"
    cv2.putText(img, text, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(clips: list[Clip], columns: int = 4, tile_width: int = 320) -> np.ndarray:
    tiles = []
    for clip in clips:
        img = annotate(clip, clip.num_frames // 2)
        h = int(img.shape[0] * tile_width / img.shape[1])
        tiles.append(cv2.resize(img, (tile_width, h), interpolation=cv2.INTER_AREA))
    tile_h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, tile_h - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


def write_gallery(clips: list[Clip], path: str | Path, columns: int = 4) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), contact_sheet(clips, columns))
    return path
