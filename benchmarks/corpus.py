"""How fast the corpus generator makes clips on this machine.

    python benchmarks/corpus.py [--clips 12] [--duration 2.0] [--workers 2]

Prints clips/s and seconds of clip per wall second for separation and localization clips
(single process, then a DataLoader with ``--workers`` worker processes), the share of time spent
on audio, drawing and the face-detectability check, and the cost of exporting one clip to
MP4 + WAV + JSON. Uses ../shared/data when present (LibriSpeech voices), espeak-only otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.corpus.dataset import ClipStream  # noqa: E402
from lab.corpus.clip_export import export_clip  # noqa: E402
from lab.corpus.generate import KINDS, default_config, make_clip  # noqa: E402
from lab.corpus.data_paths import data_available  # noqa: E402


def _rate(kind: str, config, clips: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    if workers == 0:
        make_clip(kind, 10_000, config)  # warm caches (detector, audio files)
        t0 = time.perf_counter()
        for i in range(clips):
            make_clip(kind, i, config)
        return clips / (time.perf_counter() - t0)
    loader = DataLoader(ClipStream(kind, config, base_seed=0, num_clips=clips + 2 * workers,
                                   transform=lambda c: c.meta["seed"]),
                        batch_size=None, num_workers=workers)
    it = iter(loader)
    for _ in range(workers):  # worker start-up and first clip are not the steady state
        next(it)
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n / (time.perf_counter() - t0)


def _profile_shares(kind: str, config) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for i in range(3):
        make_clip(kind, 500 + i, config)
    prof.disable()
    stats = pstats.Stats(prof).stats

    def cum(module: str, name: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[0].endswith(module) and k[2] == name)

    wall = cum("generate.py", "make_clip")
    parts = {"speech/sounds": cum("speech.py", "utterance") + cum("sounds.py", "object_sound")
             + cum("noise.py", "noise_clip"),
             "mouth tracks": cum("lips.py", "mouth_track"),
             "drawing faces": cum("face_drawing.py", "draw_face"),
             "degradations": cum("render.py", "apply"),
             "detectability check": cum("talking_faces.py", "detectable_style"),
             "backgrounds": cum("render.py", "background")}
    return ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in parts.items() if v > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    real = data_available()
    print(f"voices: {'LibriSpeech + espeak' if real else 'espeak only (no ../shared/data)'}; "
          f"clip length {args.duration} s")
    for kind in KINDS:
        config = replace(default_config(kind), duration_s=args.duration, include_librispeech=real)
        one = _rate(kind, config, args.clips, 0)
        many = _rate(kind, config, args.clips, args.workers)
        print(f"{kind:12s} {config.width}x{config.height}: 1 process {one:5.2f} clips/s "
              f"({one * args.duration:5.1f} s of clip per s); {args.workers} workers {many:5.2f} clips/s "
              f"({many * args.duration:5.1f} s/s)")
        print(f"{'':12s} time: {_profile_shares(kind, config)}")
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(default_config("separation"), duration_s=args.duration, include_librispeech=real)
        clip = make_clip("separation", 1, config)
        t0 = time.perf_counter()
        export_clip(clip, tmp, "bench")
        print(f"export one {args.duration} s separation clip (MP4+WAV+JSON): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
