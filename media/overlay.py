"""Drawing helpers for the renderer: heatmaps, face boxes, speaking indicators, stats.

All functions draw *in place* on a BGR uint8 image (OpenCV's order, as VideoFrame carries
it) and return it, so a renderer composes them on one copy of the frame. Sizes scale with
the frame so a 320-wide preview and a 1080p file look alike.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import cv2
import numpy as np

COLORMAPS = {
    "jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS, "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT,
}

# Distinct, colour-blind-friendlier hues (Okabe–Ito, BGR) so a track keeps its colour.
_TRACK_COLOURS_BGR = [(0, 159, 230), (233, 180, 86), (115, 158, 0), (66, 228, 240),
                      (178, 114, 0), (0, 94, 213), (167, 121, 204)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The same colour for the same track id, in every frame and in every output."""
    return _TRACK_COLOURS_BGR[int(track_id) % len(_TRACK_COLOURS_BGR)]


def _scale(image: np.ndarray) -> float:
    return max(image.shape[0], image.shape[1]) / 640.0


def draw_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45,
                 colormap: str = "jet", threshold: float = 0.05) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size) over the image, coloured by ``colormap``.

    The blend weight is ``alpha × heat``, so cold regions keep the picture untouched and
    only where the sound comes from lights up; below ``threshold`` nothing is drawn.
    """
    h, w = image.shape[:2]
    # colour and weigh at the heatmap's own (small) resolution, then upsample: same look, less work
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    coloured = cv2.applyColorMap((heat * 255).astype(np.uint8), COLORMAPS.get(colormap, cv2.COLORMAP_JET))
    weight = heat * np.float32(alpha)
    weight[heat < threshold] = 0.0
    if heat.shape != (h, w):
        coloured = cv2.resize(coloured, (w, h), interpolation=cv2.INTER_LINEAR)
        weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
    # per-pixel weighted blend in one C++ pass (numpy float math here costs several ms a frame)
    image[:] = cv2.blendLinear(image, coloured, 1.0 - weight, weight)
    return image


def draw_label(image: np.ndarray, text: str, origin_xy: tuple[int, int],
               colour_bgr: tuple[int, int, int], font_scale: float | None = None) -> np.ndarray:
    """Text on a filled background box (readable over any picture); origin = its top-left."""
    scale = font_scale if font_scale is not None else 0.5 * _scale(image)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = int(origin_xy[0]), int(origin_xy[1])
    x = min(max(x, 0), max(image.shape[1] - tw - 4, 0))
    y = min(max(y, 0), max(image.shape[0] - th - base - 4, 0))
    cv2.rectangle(image, (x, y), (x + tw + 4, y + th + base + 4), colour_bgr, cv2.FILLED)
    luminance = 0.114 * colour_bgr[0] + 0.587 * colour_bgr[1] + 0.299 * colour_bgr[2]
    ink = (0, 0, 0) if luminance > 128 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, y + th + 2), FONT, scale, ink, thickness, cv2.LINE_AA)
    return image


def draw_face(image: np.ndarray, box_xyxy: Iterable[float], track_id: int,
              speaking_level: float | None = None, label: str | None = None,
              speaking: bool | None = None) -> np.ndarray:
    """A track's box and label; when ``speaking_level`` (0–1) is given, a level bar beside it.

    The box is drawn thicker, and labelled " speaking", while the person speaks, so the eye finds
    the talker without reading anything. ``speaking`` says whether they do (see
    :func:`speaking_ids`); None: judge by the level alone (≥ 0.5).
    """
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    colour = track_colour(track_id)
    if speaking is None:
        speaking = speaking_level is not None and speaking_level >= 0.5
    thickness = max(1, round(2 * _scale(image))) * (2 if speaking else 1)
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
    text = label if label is not None else f"#{track_id}" + (" speaking" if speaking else "")
    draw_label(image, text, (x0, y0 - int(22 * _scale(image))), colour)
    if speaking_level is not None:
        bar_w = max(3, int(6 * _scale(image)))
        height = max(y1 - y0, 1)
        filled = int(round(height * float(np.clip(speaking_level, 0.0, 1.0))))
        bx = min(x1 + thickness + 2, image.shape[1] - bar_w)
        cv2.rectangle(image, (bx, y0), (bx + bar_w, y1), (60, 60, 60), cv2.FILLED)
        if filled:
            cv2.rectangle(image, (bx, y1 - filled), (bx + bar_w, y1), colour, cv2.FILLED)
    return image


def draw_faces(image: np.ndarray, boxes_xyxy: np.ndarray, track_ids: Iterable[int],
               frame_size: tuple[int, int] = (0, 0), rms_by_track: Mapping[int, float] | None = None,
               speaking: Collection[int] | None = None) -> np.ndarray:
    """Every tracked face, its boxes scaled from a ``frame_size`` = (width, height) frame (0: as
    they are) to the image; a face whose voice has a level (RMS) in ``rms_by_track`` gets a bar.
    ``speaking``: the track ids tagged as speaking (:func:`speaking_ids`); None: each by its level."""
    for box, track_id in zip(scale_boxes(boxes_xyxy, frame_size, image.shape).tolist(), track_ids):
        rms = (rms_by_track or {}).get(int(track_id))
        draw_face(image, box, int(track_id), None if rms is None else level_from_rms(rms),
                  speaking=None if speaking is None else int(track_id) in speaking)
    return image


def scale_boxes(boxes_xyxy: np.ndarray, frame_size: tuple[int, int], image_shape: tuple[int, ...]) -> np.ndarray:
    """Boxes in pixels of a ``frame_size`` = (width, height) frame (0: already the image's) → the image's pixels."""
    sx = image_shape[1] / frame_size[0] if frame_size[0] else 1.0
    sy = image_shape[0] / frame_size[1] if frame_size[1] else 1.0
    return np.asarray(boxes_xyxy, np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])


def speaking_ids(track_ids: Iterable[int], rms_by_track: Mapping[int, float] | None,
                 speaking_track_id: int | None) -> set[int]:
    """Which faces are tagged as speaking.

    ``speaking_track_id`` is the face the fusion matched with the sound by lip-sync (-1: none):
    it knows *who* talks, where a loud isolated voice only says that its separator output is loud
    (and a weak separation leaks one speaker into every voice). None means no such judgement is
    available (no heatmap wired): then a face speaks while its voice's level is ≥ 0.5.
    """
    ids = [int(i) for i in track_ids]
    if speaking_track_id is not None:
        return {speaking_track_id} & set(ids)
    return {i for i in ids if (rms_by_track or {}).get(i) is not None and level_from_rms(rms_by_track[i]) >= 0.5}


def rms_by_track(track_ids: Iterable[int], samples: np.ndarray) -> dict[int, float]:
    """The RMS of each row of ``samples`` (one voice per track), for :func:`draw_faces`."""
    return {int(i): float(np.sqrt(np.mean(np.square(s)))) if s.size else 0.0 for i, s in zip(track_ids, samples)}


def level_from_rms(rms: float, floor_db: float = -60.0, ceiling_db: float = -10.0) -> float:
    """Map an RMS amplitude to 0–1 on a dB scale: speech spans decades of amplitude."""
    db = 20.0 * np.log10(max(float(rms), 1e-9))
    return float(np.clip((db - floor_db) / (ceiling_db - floor_db), 0.0, 1.0))


def latency_rows(telemetry: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Heartbeat stats of every node → one row per node for the strip and the web table.

    ``age_ms`` is the worst input's p50 age of data on arrival (now − capture_ns): how far
    behind the glass this node works; ``compute_ms`` its own p50 time per message/step.
    """
    rows = []
    for node, stats in sorted(telemetry.items()):
        compute = (stats.get("compute_ms") or {}).get("p50")
        ages = [(port.get("latency_ms") or {}).get("p50") for port in (stats.get("inputs") or {}).values()]
        ages = [a for a in ages if a is not None]
        dropped = sum(int(port.get("dropped", 0)) for port in (stats.get("inputs") or {}).values())
        rows.append({"node": node, "compute_ms": compute, "age_ms": max(ages) if ages else None,
                     "dropped": dropped, "errors": int((stats.get("counters") or {}).get("errors", 0))})
    return rows


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def draw_latency_strip(image: np.ndarray, rows: list[dict[str, Any]]) -> np.ndarray:
    """A translucent strip along the bottom: ``node compute/age ms`` for every node."""
    if not rows:
        return image
    scale = 0.4 * _scale(image)
    thickness = 1
    items = [f"{r['node']} {_fmt_ms(r['compute_ms'])}/{_fmt_ms(r['age_ms'])}ms" for r in rows]
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thickness)
    line_h = th + base + 4
    # wrap items into lines that fit the width
    lines, current = [], "compute/age: "
    for item in items:
        candidate = current + ("  " if current.strip() and not current.endswith(": ") else "") + item
        if cv2.getTextSize(candidate, FONT, scale, thickness)[0][0] > image.shape[1] - 8 and current.strip():
            lines.append(current)
            current = item
        else:
            current = candidate
    lines.append(current)
    strip_h = min(line_h * len(lines) + 4, image.shape[0])
    region = image[image.shape[0] - strip_h:]
    cv2.convertScaleAbs(region, dst=region, alpha=0.35)
    for i, line in enumerate(lines):
        y = image.shape[0] - strip_h + 2 + th + i * line_h
        cv2.putText(image, line, (4, y), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def draw_frame_number(image: np.ndarray, frame_index: int, extra: str = "") -> np.ndarray:
    """Frame number (and e.g. the frame's age) in the top-left corner."""
    return draw_label(image, f"frame {frame_index}" + (f"  {extra}" if extra else ""), (4, 4), (32, 32, 32),
                      font_scale=0.45 * _scale(image))
