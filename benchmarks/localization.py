"""Per-frame cost of the localization nodes' work on this CPU, through the engine layer (ORT).

    python benchmarks/localization.py [--iters 200] [--threads 1 2]

Rows: visual encoder (resize 720p → 224² + network), audio encoder (one 1 s window), fusion (one
heatmap), and their sum = the CPU one video frame costs at 25 fps (one embedding per frame). The
first line names the machine; shared machines are noisy, so p50 is the figure to quote.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.loader import load  # noqa: E402
from engines.localization.localizer_inputs import WINDOW_FRAMES, resize_frame  # noqa: E402


def timed(fn, iters: int) -> np.ndarray:
    for _ in range(max(3, iters // 10)):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"load average {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    camera = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    logmel = rng.normal(-8, 3, (1, WINDOW_FRAMES, 80)).astype(np.float32)
    print(f"{'stage':<34}{'threads':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for threads in args.threads:
        visual, audio, fusion = (load(f"localizer_{m}", backend="onnxruntime", threads=threads)
                                 for m in ("visual", "audio", "fusion"))
        image = resize_frame(camera).transpose(2, 0, 1)[None].astype(np.float32)
        features = visual.run({"image": image, "previous": image})["features"]
        embedding = audio.run({"logmel": logmel})["embedding"]
        stages = {
            "visual encoder (resize + network)": lambda: visual.run(
                {"image": resize_frame(camera).transpose(2, 0, 1)[None].astype(np.float32), "previous": image}),
            "audio encoder (1 s window)": lambda: audio.run({"logmel": logmel}),
            "fusion (one heatmap)": lambda: fusion.run({"features": features, "embedding": embedding}),
        }
        total = np.zeros(args.iters)
        for name, fn in stages.items():
            ms = timed(fn, args.iters)
            total += ms
            print(f"{name:<34}{threads:>8}{np.percentile(ms, 50):>9.2f}{np.percentile(ms, 90):>9.2f}"
                  f"{np.percentile(ms, 99):>9.2f}")
        print(f"{'per frame, all three':<34}{threads:>8}{np.percentile(total, 50):>9.2f}"
              f"{np.percentile(total, 90):>9.2f}{np.percentile(total, 99):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
