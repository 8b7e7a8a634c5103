"""Evaluate the localizer on the held-out scenes, beside the baselines (``launch.py eval-localizer``).

    python launch.py eval-localizer                    table: 3 modes + shipped ONNX + baselines + ceiling
    python launch.py eval-localizer --real-video       also the two real clips in ../shared/data/video
    python launch.py eval-localizer --real-video --weights out/localization/seed1   a training run's weights
    python launch.py eval-localizer --real-footage     only the real-footage evaluation (issue 14): one speaker,
                                                       two people of whom one speaks, labelled sounding scenes
                                                       (`lab/localization/real_footage.py`); --split validation
                                                       scores the validation identities instead (model choice)

Our rows score the unclipped cosine map (see `train.heatmaps`); the live heatmap is the same map
with negatives clipped. Held-out scenes: the corpus' fixed ``loc2`` set (100 VGG-SS-like scenes of
4 s, seeds disjoint from training, only LibriSpeech test-other voices and the eval face photos),
frames at 1.2/2.0/2.8/3.6 s → 400 samples, ground truth the union of the sounding objects' boxes.
The output starts with how much of the frame the ground truth covers and the protocol's ceiling
there. Every row is computed here from the shipped weights, so the table is reproducible; it is
also written to out/localization/eval.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lab.localization.localization_losses import MODES
from lab.localization.localization_metrics import Scores

HEADER = ("method", "cIoU@0.5", "AUC", "mean cIoU", "cIoU(τ=.5)@0.5", "AUC(τ=.5)", "pointing")


def row(name: str, s: Scores) -> str:
    return (f"| {name} | {s.ciou05:.3f} | {s.auc:.3f} | {s.mean_ciou:.3f} | {s.fixed_ciou05:.3f} | "
            f"{s.fixed_auc:.3f} | {s.pointing:.3f} |")


def baseline_maps(samples, seed: int = 0) -> dict[str, np.ndarray]:
    from lab.localization import localization_baselines as baselines

    rng = np.random.default_rng(seed)
    n = len(samples)
    return {
        "baseline: centre prior": np.repeat(baselines.centre_prior()[None], n, axis=0),
        "baseline: random map": np.stack([baselines.random_map(rng) for _ in range(n)]),
        "baseline: AV synchrony (training-free)": np.stack(
            [baselines.synchrony_map(h, e) for h, e in zip(samples.history, samples.envelope)]),
    }


def onnx_maps(samples) -> np.ndarray:
    """The shipped model through the engine layer (ONNX Runtime), as the live nodes run it."""
    from engines.loader import load

    visual, audio, fusion = (load(f"localizer_{part}", backend="onnxruntime") for part in ("visual", "audio", "fusion"))
    out = []
    for i in range(len(samples)):
        image = samples.image[i].transpose(2, 0, 1)[None].astype(np.float32)
        previous = samples.previous[i].transpose(2, 0, 1)[None].astype(np.float32)
        features = visual.run({"image": image, "previous": previous})["features"]
        embedding = audio.run({"logmel": samples.logmel[i][None]})["embedding"]
        out.append(fusion.run({"features": features, "embedding": embedding})["cosine"][0])
    return np.stack(out)


def evaluate(samples, weights: Path) -> list[str]:
    import torch

    from engines.localization.localizer_model import Checkpoint
    from engines.localization.shipped_localizer import weights_path
    from lab.localization.train_localizer import heatmaps

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for mode in MODES:
        path = weights_path(mode, weights)
        if not path.exists():
            lines.append(f"| ours, {mode} | (no weights at {path}) |")
            continue
        torch.manual_seed(0)
        lines.append(row(f"ours, {mode}", Scores.of(heatmaps(Checkpoint.load(path).model(), samples), samples.gt)))
    try:
        from engines.localization.shipped_localizer import SHIPPED_MODE

        lines.append(row(f"ours, {SHIPPED_MODE}, shipped ONNX on ORT", Scores.of(onnx_maps(samples), samples.gt)))
    except FileNotFoundError as exc:
        lines.append(f"| shipped ONNX | (missing: {exc}) |")
    if samples.history is not None:  # validation samples carry no video history: no synchrony map
        for name, maps in baseline_maps(samples).items():
            lines.append(row(name, Scores.of(maps, samples.gt)))
    lines.append(row("ceiling of the protocol (best possible map)", Scores.ceiling(samples.gt)))
    return lines


def coverage(gts: np.ndarray) -> list[str]:
    """The ground truth's share of the frame, and what it allows under the median protocol."""
    g = gts.reshape(len(gts), -1).mean(axis=1)
    q10, q25, q50, q75, q90 = np.percentile(g, [10, 25, 50, 75, 90])
    ceiling = Scores.ceiling(gts)
    return [f"Ground truth (union of sounding boxes) covers {q50:.1%} of the frame (median; mean {g.mean():.1%}, "
            f"quartiles {q25:.1%}-{q75:.1%}, 10-90 % {q10:.1%}-{q90:.1%}).",
            f"Protocol ceiling (the score of a perfect map = GT, median binarisation): cIoU@0.5 {ceiling.ciou05:.3f}, "
            f"AUC {ceiling.auc:.3f}; {np.mean((g >= 0.25) & (g <= 1.0)):.1%} of frames can reach cIoU >= 0.5."]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch.py eval-localizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=100, help="held-out scenes (4 frames each)")
    p.add_argument("--weights", type=Path, default=None, help="folder of localizer_<mode>.pt (default: shipped)")
    p.add_argument("--real-video", action="store_true", help="also the real clips in ../shared/data/video")
    p.add_argument("--real-footage", action="store_true",
                   help="only the real-footage table (../shared/data/video/real; see lab/localization/real_footage.py)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="--real-footage: the test identities + talking/ + sounding/, or the validation identities")
    p.add_argument("--pairs", type=int, default=None,
                   help="--real-footage: clip pairs for the two-people composites (4 composites each; default 20)")
    p.add_argument("--seed", type=int, default=None,
                   help="--real-footage: which pairs of clips make the composites (default 0; the table's spread "
                        "across seeds is in lab/localization/REAL_FOOTAGE.md)")
    p.add_argument("--validation", action="store_true",
                   help="score the validation scenes of the training split instead (model selection)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None,
                   help="markdown copy of the table (default out/localization/{eval,validation}.md)")
    args = p.parse_args(argv)
    if args.real_footage:
        return real_footage_main(args)

    import torch

    from lab.corpus.data_paths import DataMissingError
    from lab.localization.localization_samples import EVAL_SET, load_or_build
    from lab.localization.train_localizer import WEIGHTS

    torch.set_num_threads(args.threads)
    try:
        if args.validation:
            from lab.localization.train_localizer import split

            samples = split(load_or_build("train"))[1]
            what = "Validation scenes of the training split"
        else:
            samples = load_or_build("eval", num_clips=args.clips)
            what = f"Held-out localization scenes (eval set '{EVAL_SET}')"
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = [f"{what}: {len(samples)} frames of {len(np.unique(samples.clip_seed))} scenes.", *coverage(samples.gt), ""]
    lines += evaluate(samples, args.weights or WEIGHTS)
    if args.real_video:
        from lab.localization.localizer_real_video import report

        model = None
        if args.weights is not None:  # a training run's weights: its supervised model, in torch
            from engines.localization.localizer_model import Checkpoint
            from engines.localization.shipped_localizer import SHIPPED_MODE
            from engines.localization.shipped_localizer import weights_path

            path = weights_path(SHIPPED_MODE, args.weights)
            model = Checkpoint.load(path).model()
            lines += ["", f"Real video with {path} (torch):"]
        lines += ["", *report(model=model)]
    text = "\n".join(lines)
    print(text)
    out = args.out or Path("out/localization") / ("validation.md" if args.validation else "eval.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


def real_footage_main(args: argparse.Namespace) -> int:
    from lab.corpus.data_paths import DataMissingError
    from lab.localization import real_footage

    what = "shipped ONNX" if args.weights is None else str(args.weights)
    print(f"Real-footage localization ({args.split} split, {what}); needs ../shared/data/video/real. "
          f"Maps are cached under {real_footage.CACHE}.", file=sys.stderr)
    try:
        lines = real_footage.evaluate(args.weights, args.split, args.threads,
                                      pairs=args.pairs or real_footage.COMPOSITE_PAIRS,
                                      seed=real_footage.COMPOSITE_SEED if args.seed is None else args.seed,
                                      log=lambda m: print(m, file=sys.stderr, flush=True))
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = "\n".join([f"Real footage, {args.split} split (lab/localization/real_footage.py):", "", *lines])
    print(text)
    out = args.out or Path("out/localization") / f"real_footage_{args.split}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
