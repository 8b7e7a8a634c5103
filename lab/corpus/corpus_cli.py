"""Command line of the corpus: ``make-data``, ``gallery``, ``make-demo``.

``main(argv)`` returns an exit code; ``launch.py`` forwards its subcommands here. Commands that
need ../shared/data say so and exit 2 when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from lab.corpus.generate import KINDS, default_config, make_clip
from lab.corpus.data_paths import DataMissingError
from lab.corpus.speech import SPLITS, TRAIN


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make-data", description="Earshot training/evaluation corpus")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-data", help="export N clips (MP4 + WAV sources + JSON) to a folder")
    m.add_argument("--kind", choices=KINDS, default="separation")
    m.add_argument("--split", choices=SPLITS, default=TRAIN)
    m.add_argument("--eval-set", help="export a fixed held-out set by name (overrides kind/split/seed)")
    m.add_argument("--num", type=int, default=10, help="number of clips")
    m.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip i uses seed+i)")
    m.add_argument("--duration", type=float, default=None, help="clip length in seconds")
    m.add_argument("--speakers", type=int, nargs="+", default=None, help="separation: speaker counts to draw from")
    m.add_argument("--width", type=int, default=None)
    m.add_argument("--height", type=int, default=None)
    m.add_argument("--out", type=Path, required=True, help="output folder")

    g = sub.add_parser("gallery", help="PNG contact sheet of scenes with ground truth")
    g.add_argument("--num", type=int, default=8, help="clips per kind")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--split", choices=SPLITS, default=TRAIN)
    g.add_argument("--out", type=Path, default=Path("out/gallery.png"))

    d = sub.add_parser("make-demo", help="regenerate the shipped demo clip (needs espeak-ng only)")
    d.add_argument("--out", type=Path, default=None, help="folder (default: demo/ in the repository)")
    return p


def _make_data(args: argparse.Namespace) -> int:
    from lab.corpus.clip_export import export_clip

    if args.eval_set:
        from lab.corpus.evalset import EVAL_SETS

        if args.eval_set not in EVAL_SETS:
            print(f"unknown eval set {args.eval_set!r}; known: {', '.join(EVAL_SETS)}", file=sys.stderr)
            return 2
        es = EVAL_SETS[args.eval_set]
        kind, config, seeds = es.kind, es.config, list(es.seeds())[: args.num]
    else:
        overrides = {k: v for k, v in (("duration_s", args.duration), ("width", args.width),
                                       ("height", args.height)) if v is not None}
        if args.speakers and args.kind == "separation":
            overrides["num_speakers"] = tuple(args.speakers)
        kind, config = args.kind, default_config(args.kind, args.split, **overrides)
        seeds = [args.seed + i for i in range(args.num)]
    _check_voices(config)
    for seed in tqdm(seeds, desc=f"{kind} clips", unit="clip"):
        export_clip(make_clip(kind, seed, config), args.out, f"{kind}_{seed:010d}")
    print(f"wrote {len(seeds)} {kind} clips to {args.out}")
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from lab.corpus.gallery import write_gallery

    _check_voices(default_config("separation", args.split))
    clips = []
    jobs = [(kind, args.seed + i) for kind in KINDS for i in range(args.num)]
    for kind, seed in tqdm(jobs, desc="rendering", unit="clip"):
        config = default_config(kind, args.split)
        if kind == "separation":
            config = replace(config, num_speakers=(2, 3))
        clips.append(make_clip(kind, seed, config))
    path = write_gallery(clips, args.out)
    print(f"wrote {path}")
    return 0


def _check_voices(config) -> None:
    """Fail before any progress bar if the speech a config needs is not there."""
    from lab.corpus.speech import speakers

    speakers(config.split, include_espeak=config.include_espeak, include_librispeech=config.include_librispeech)


def _make_demo(args: argparse.Namespace) -> int:
    from lab.corpus.demo_clip import DEMO_DIR, make_demo

    paths = make_demo(args.out or DEMO_DIR)
    for role, p in paths.items():
        print(f"{role:12s} {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"make-data": _make_data, "gallery": _gallery, "make-demo": _make_demo}[args.command](args)
    except DataMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
