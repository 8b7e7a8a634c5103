"""Train the localizer in one or all of the paper's three modes (``launch.py train-localizer``).

    python launch.py train-localizer                      all three modes, shipped settings
    python launch.py train-localizer --mode supervised --max-minutes 12

Training data: 800 v4 scenes plus the 1600 training-only transfer scenes (``--transfer-clips``,
``--transfer2-clips``, ``--transfer3-clips``; ``--transfer4-clips``, gesturing hands, is an
experiment and off by default; MODEL_CARD.md). Fine-tuning from earlier weights of the
same architecture: ``--init FOLDER --lr 1.5e-3 --weights out/localization/exp``.

Samples come from generated scenes (lab/corpus, needs ../shared/data), cut once and cached under
out/localization/ with the frozen trunk's features beside each shard, so a step runs only the head.
Each mode trains from the same seed on the same sample order, so the modes differ only in their
loss. Checkpoints and curves go to out/localization/runs/<mode>/; the final weights to
engines/weights/localizer_<mode>.pt (float16, ~0.9 MB), which `evaluate` and the export read.
With the defaults each mode gets 8 minutes of wall clock, one after another (24 min on 2 CPU cores,
plus the one-off scene and trunk caches); the shipped weights are exactly that run (MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from engines.localization.shipped_localizer import weights_path
from engines.models import WEIGHTS_DIR
from lab.localization.localization_losses import MODES

WEIGHTS = WEIGHTS_DIR
VAL_FRACTION = 0.05


def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up to ``peak``, then cosine down to 2 % of it, over progress 0 → 1."""
    if progress < warmup:
        return peak * max(progress, 1e-3) / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return peak * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * t)))


def to_batch(samples, index: np.ndarray, flip: np.ndarray | None = None):
    """Numpy samples → torch tensors (N, 3, 224, 224) float 0..255, flipped left-right where asked;
    the last is the frozen trunk's features (of the flipped image where flipped), or None."""
    import torch

    image, previous, gt = samples.image[index], samples.previous[index], samples.gt[index]
    trunk = None if samples.trunk is None else samples.trunk[index]
    if flip is not None and flip.any():
        image, previous, gt = image.copy(), previous.copy(), gt.copy()
        image[flip] = image[flip][:, :, ::-1]
        previous[flip] = previous[flip][:, :, ::-1]
        gt[flip] = gt[flip][:, :, ::-1]
        if trunk is not None:
            trunk = np.where(flip[:, None, None, None], samples.trunk_flipped[index], trunk)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float()  # noqa: E731
    return (chw(image), chw(previous), torch.from_numpy(samples.logmel[index]), torch.from_numpy(gt),
            None if trunk is None else torch.from_numpy(trunk.astype(np.float32)))


def heatmaps(model, samples, batch: int = 64) -> np.ndarray:
    """(N, 14, 14) maps to score: the cosine map *before* negatives are clipped, in eval mode.

    Clipping changes no ranking among the positive cells, but it ties most of the frame at 0, and
    the LVS median threshold (``pred >= sorted[N/2]``) then selects every pixel. LVS and EZ-VSL
    score their raw similarity maps; so do we.
    """
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch):
            idx = np.arange(start, min(start + batch, len(samples)))
            image, previous, logmel, _, trunk = to_batch(samples, idx)
            out.append(model(image, previous, logmel, trunk)["cosine"].numpy())
    return np.concatenate(out)


def split(samples, fraction: float = VAL_FRACTION):
    """Validation = the last scenes by seed (whole scenes, never frames of a training scene)."""
    from lab.localization.localization_samples import Samples

    from lab.localization.localization_samples import TRANSFER_SEED_BASE

    val = np.zeros(len(samples), bool)
    group = samples.clip_seed // TRANSFER_SEED_BASE  # 0: v4, k: transfer round k
    for family in (group == g for g in np.unique(group)):  # each family gives its last scenes
        seeds = np.unique(samples.clip_seed[family])
        if len(seeds):
            val |= family & (samples.clip_seed >= seeds[int(len(seeds) * (1 - fraction))])
    take = lambda m: Samples(**{k: (v[m] if v is not None else None) for k, v in samples.__dict__.items()})  # noqa: E731
    return take(~val), take(val)


def train_mode(mode: str, train, val, args: argparse.Namespace) -> Path:
    import torch
    from tqdm import tqdm

    from lab.localization import localization_losses as losses
    from lab.localization.training_curves import save_curves
    from lab.localization.localization_metrics import Scores
    from engines.localization.localizer_model import Checkpoint, Localizer

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Localizer()
    if args.init is not None:  # fine-tune: start from the weights of the same mode in that folder
        model.load_state_dict(Checkpoint.load(weights_path(mode, args.init)).state)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    run_dir = args.runs / mode
    run_dir.mkdir(parents=True, exist_ok=True)
    history: dict[str, list[float]] = {"step": [], "loss": [], "unsup": [], "sup": [], "val_step": [],
                                       "val_ciou05": [], "val_auc": [], "val_pointing": [], "val_fixed_ciou05": []}
    started = time.monotonic()
    bar = tqdm(range(1, args.steps + 1), desc=f"train {mode}", unit="step")
    for step in bar:
        model.train()
        progress = 0.0
        index = rng.choice(len(train), size=args.batch, replace=False)
        image, previous, logmel, gt, trunk = to_batch(train, index, flip=rng.random(args.batch) < 0.5)
        if args.motion_dropout > 0:  # appearance alone must localize too: real hands move more than lips
            still = torch.from_numpy(rng.random(args.batch) < args.motion_dropout)
            previous = torch.where(still[:, None, None, None], image, previous)
        parts = losses.total(mode, model(image, previous, logmel, trunk), gt, args.lam)
        optimiser.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimiser.step()
        # progress is steps or wall clock, whichever is further along: on a shared CPU the step
        # rate varies several-fold, and a run cut by --max-minutes must still end annealed
        progress = max(step / args.steps, (time.monotonic() - started) / (60 * args.max_minutes or float("inf")))
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(progress, args.lr)
        history["step"].append(step)
        for key in ("loss", "unsup", "sup"):
            history[key].append(float(parts[key].detach()) if key in parts else float("nan"))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            scores = Scores.of(heatmaps(model, val), val.gt)
            history["val_step"].append(step)
            history["val_ciou05"].append(scores.ciou05)
            history["val_auc"].append(scores.auc)
            history["val_pointing"].append(scores.pointing)
            history["val_fixed_ciou05"].append(scores.fixed_ciou05)
            bar.write(f"[{mode}] step {step}: val cIoU@0.5 {scores.ciou05:.3f} AUC {scores.auc:.3f} "
                      f"pointing {scores.pointing:.3f} cIoU(τ=.5)@0.5 {scores.fixed_ciou05:.3f}")
            Checkpoint(model.state_dict(), mode, history).save(run_dir / "last.pt")
            save_curves(run_dir / "curves.png", history, mode)
        if progress >= 1.0 and step < args.steps:
            bar.write(f"[{mode}] time budget of {args.max_minutes} min reached at step {step}")
            scores = Scores.of(heatmaps(model, val), val.gt)
            for key, value in (("val_step", step), ("val_ciou05", scores.ciou05), ("val_auc", scores.auc),
                               ("val_pointing", scores.pointing), ("val_fixed_ciou05", scores.fixed_ciou05)):
                history[key].append(value)
            save_curves(run_dir / "curves.png", history, mode)
            break
    history["minutes"] = [(time.monotonic() - started) / 60]
    Checkpoint(model.state_dict(), mode, history).save(run_dir / "last.pt")
    out = weights_path(mode, args.weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    Checkpoint(model.state_dict(), mode, history).save(out)
    print(f"[{mode}] {history['minutes'][0]:.1f} min, weights → {out}, curves → {run_dir / 'curves.png'}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py train-localizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=[*MODES, "all"], default="all")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps per mode (or --max-minutes)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    # λ = 10: the BCE term sits near 0.3 and InfoNCE near 2 at the start; with λ = 1 the metric loss
    # drowned the map loss (MODEL_CARD.md), λ = 10 gives the two terms the same order of magnitude
    p.add_argument("--lam", type=float, default=10.0, help="semi-supervised weight of the supervised loss")
    p.add_argument("--train-clips", type=int, default=800, help="generated training scenes (6 frames each)")
    p.add_argument("--transfer-clips", type=int, default=800,
                   help="extra training scenes with textured backgrounds, small faces and 16:9 frames")
    p.add_argument("--transfer2-clips", type=int, default=400,
                   help="extra training scenes that also hold talking heads on their whole photo and subtitles")
    p.add_argument("--transfer3-clips", type=int, default=400, help="as --transfer2-clips, plus silent hands")
    p.add_argument("--transfer4-clips", type=int, default=0,
                   help="as --transfer3-clips, with the hands gesturing (in time with their talker's speech)")
    p.add_argument("--init", type=Path, default=None,
                   help="folder with localizer_<mode>.pt to start from (fine-tuning) instead of random weights")
    p.add_argument("--motion-dropout", type=float, default=0.0,
                   help="fraction of training samples shown without motion (previous frame = frame)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--max-minutes", type=float, default=8.0,
                   help="per-mode wall-clock budget; the schedule anneals by it (0: steps only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=Path, default=Path("out/localization/runs"))
    p.add_argument("--weights", type=Path, default=WEIGHTS, help="where the final weights go")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import torch

    from lab.corpus.data_paths import DataMissingError
    from lab.localization.localization_samples import load_or_build

    torch.set_num_threads(args.threads)
    try:
        samples = load_or_build("train", num_clips=args.train_clips, transfer_clips=args.transfer_clips,
                                transfer2_clips=args.transfer2_clips, transfer3_clips=args.transfer3_clips,
                                transfer4_clips=args.transfer4_clips)
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train, val = split(samples)
    del samples  # split copied it: keep one copy in memory (two training processes fit side by side)
    print(f"{len(train)} training samples, {len(val)} validation samples (held-out scenes of the training split)")
    for mode in MODES if args.mode == "all" else (args.mode,):
        train_mode(mode, train, val, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
