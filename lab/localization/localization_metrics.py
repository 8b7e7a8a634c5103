"""cIoU@0.5 and AUC exactly as the LVS (Chen et al. 2021) and EZ-VSL (Mo & Morgado 2022) code compute them.

Per sample (``utils.Evaluator.cal_CIOU`` after ``test.py``'s preparation):

1. upsample the map to 224² (EZ-VSL: bicubic, half-pixel centres; OpenCV's INTER_CUBIC is the same
   Keys a = −0.75 kernel as ``F.interpolate(mode="bicubic", align_corners=False)``);
2. min-max normalise (``normalize_img``; a constant map is left as is);
3. threshold at the median: ``thr = sort(pred.flat)[224·224 // 2]``, ``P = pred >= thr`` (top ~50 %);
4. ``cIoU = Σ(P·G) / (ΣG + Σ(P·[G = 0]))``.

Over a set: cIoU@0.5 = mean(cIoU ≥ 0.5); AUC = trapezoid area under the success rate
mean(cIoU ≥ t) for t = 0, 0.05, …, 1 (``sklearn.metrics.auc``).

A consequence worth knowing: P always covers half the image, so a sample whose ground truth covers
a fraction g < ½ of the frame can reach at most cIoU = 2g (``ciou_ceiling``). Benchmarks with big
boxes (Flickr-SoundNet, VGG-SS) hide this; scenes with small objects do not.

Two extra read-outs, not part of the LVS protocol, are given beside it: ``pointing`` (the map's peak
falls inside the ground truth: the real-video figure) and cIoU with a fixed threshold τ = 0.5 on the
normalised map (Senocak et al.'s own cIoU(τ)), which lets a sharp map be scored as sharp.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 224
THRESHOLDS = np.round(np.arange(21) * 0.05, 2)


def upsample(heatmap: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(h, w) map → (size, size) float64, bicubic with half-pixel centres (EZ-VSL)."""
    m = np.asarray(heatmap, np.float32)
    if m.shape == (size, size):
        return m.astype(np.float64)
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64)


def normalize_img(value: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map is returned unchanged (LVS ``normalize_img``)."""
    vmin, vmax = value.min(), value.max()
    return (value - vmin) / (vmax - vmin) if vmax - vmin != 0 else value


def binarise_median(pred: np.ndarray) -> np.ndarray:
    """``pred >= sort(pred)[N // 2]``: the top half of the pixels (ties included)."""
    thr = np.sort(pred.flatten())[pred.shape[0] * pred.shape[1] // 2]
    return (pred >= thr).astype(np.float64)


def ciou_of(infer_map: np.ndarray, gt: np.ndarray) -> float:
    """``Σ(P·G) / (ΣG + Σ(P·[G=0]))`` of a 0/1 prediction and a ground-truth map."""
    gt = np.asarray(gt, np.float64)
    return float(np.sum(infer_map * gt) / (np.sum(gt) + np.sum(infer_map * (gt == 0))))


def ciou(heatmap: np.ndarray, gt: np.ndarray) -> float:
    """One sample's cIoU under the LVS/EZ-VSL protocol (median binarisation)."""
    return ciou_of(binarise_median(normalize_img(upsample(heatmap, gt.shape[0]))), gt)


def ciou_fixed(heatmap: np.ndarray, gt: np.ndarray, tau: float = 0.5) -> float:
    """cIoU with the normalised map binarised at a fixed τ (Senocak et al. 2018's cIoU(τ))."""
    pred = normalize_img(upsample(heatmap, gt.shape[0]))
    return ciou_of((pred >= tau).astype(np.float64), gt)


def pointing_hit(heatmap: np.ndarray, gt: np.ndarray) -> bool:
    """Does the upsampled map's maximum fall on the ground truth?"""
    pred = upsample(heatmap, gt.shape[0])
    y, x = np.unravel_index(int(np.argmax(pred)), pred.shape)
    return bool(gt[y, x])


def ciou_ceiling(gt: np.ndarray) -> float:
    """The best cIoU any map can reach under median binarisation: top-half P vs. G's area."""
    g, half = float(np.sum(gt > 0)), gt.size - gt.size // 2
    return min(g / half, half / g) if g else 0.0


def success_rates(cious: np.ndarray) -> np.ndarray:
    """mean(cIoU ≥ t) at t = 0, 0.05, …, 1."""
    c = np.asarray(cious, np.float64)
    return np.array([np.mean(c >= t) for t in THRESHOLDS])


def auc(cious: np.ndarray) -> float:
    """Trapezoid area under the success-rate curve (``sklearn.metrics.auc`` of LVS)."""
    return float(np.trapezoid(success_rates(cious), THRESHOLDS))


def ciou_at(cious: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean(np.asarray(cious) >= threshold))


@dataclass(frozen=True)
class Scores:
    """One method's row of the evaluation table."""

    ciou05: float       # LVS/EZ-VSL cIoU@0.5
    auc: float          # LVS/EZ-VSL AUC
    mean_ciou: float
    fixed_ciou05: float  # cIoU(τ=0.5)@0.5
    fixed_auc: float
    pointing: float     # peak on a sounding object
    n: int

    @staticmethod
    def of(heatmaps: np.ndarray, gts: np.ndarray) -> "Scores":
        c = np.array([ciou(h, g) for h, g in zip(heatmaps, gts)])
        f = np.array([ciou_fixed(h, g) for h, g in zip(heatmaps, gts)])
        p = np.array([pointing_hit(h, g) for h, g in zip(heatmaps, gts)])
        return Scores(ciou_at(c), auc(c), float(c.mean()), ciou_at(f), auc(f), float(p.mean()), len(c))

    @staticmethod
    def ceiling(gts: np.ndarray) -> "Scores":
        """The median-protocol upper bound of this ground truth (fixed-τ and pointing: 1.0)."""
        c = np.array([ciou_ceiling(g) for g in gts])
        return Scores(ciou_at(c), auc(c), float(c.mean()), 1.0, 1.0, 1.0, len(c))
