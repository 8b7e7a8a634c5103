"""The three training objectives of Senocak et al.: unsupervised, supervised, semi-supervised.

* unsupervised (metric learning): the attended visual feature f_v of clip i should be closer to
  clip i's audio embedding than to any other clip's in the batch. We use InfoNCE over the batch
  (every other clip is a negative) rather than the paper's single-negative triplet: same idea, more
  negatives per step, which matters when a CPU affords few steps.
* supervised: the map should light up where the ground truth is. Binary cross-entropy on the
  cosine map read as logits (cosine × ``SUP_SCALE``), so positions below zero still get gradient
  even though the shipped map clips them.
* semi-supervised: the sum, ``unsup + λ · sup`` (the paper's L = L_unsup + λ L_A). λ = 10 by default
  (`train.py`): at the start BCE is ~0.3 and InfoNCE ~2-3, so λ = 1 let the metric loss drown the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("semisupervised", "supervised", "unsupervised")  # shipped one first
TEMPERATURE = 0.1
SUP_SCALE = 10.0


def similarity(f_v: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine of every clip's f_v with every clip's audio embedding."""
    return F.normalize(f_v, dim=1) @ F.normalize(embedding, dim=1).T


def infonce(f_v: torch.Tensor, embedding: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE: positives on the diagonal (same clip), negatives the rest of the batch."""
    logits = similarity(f_v, embedding) / temperature
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def pair_losses(f_v: torch.Tensor, embedding: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """(B, B) per-pair contrastive loss −log σ(±s/τ): matched pairs (diagonal) want s high, others low.

    What a test compares: on a trained model the matched entries must be the smaller ones.
    """
    s = similarity(f_v, embedding) / temperature
    sign = 2 * torch.eye(len(s), device=s.device) - 1
    return F.softplus(-sign * s)


def grid_target(gt: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 224, 224) 0/1 ground truth → (B, grid, grid) fraction of each cell covered."""
    return F.adaptive_avg_pool2d(gt.float().unsqueeze(1), grid).squeeze(1)


def supervised(cosine: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """BCE between the cosine map (as logits) and the per-cell ground-truth coverage."""
    return F.binary_cross_entropy_with_logits(cosine * SUP_SCALE, grid_target(gt, cosine.shape[-1]))


def total(mode: str, out: dict[str, torch.Tensor], gt: torch.Tensor, lam: float = 1.0) -> dict[str, torch.Tensor]:
    """The loss of ``mode`` and its parts (for the curves)."""
    parts: dict[str, torch.Tensor] = {}
    if mode in ("unsupervised", "semisupervised"):
        parts["unsup"] = infonce(out["f_v"], out["embedding"])
    if mode in ("supervised", "semisupervised"):
        parts["sup"] = supervised(out["cosine"], gt)
    if not parts:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if mode == "semisupervised":
        parts["loss"] = parts["unsup"] + lam * parts["sup"]
    else:  # one term alone: λ only weighs the two against each other
        parts["loss"] = parts.get("unsup", parts.get("sup"))  # type: ignore[assignment]
    return parts
