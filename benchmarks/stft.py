"""Cost of the audio front end per second of audio (16 kHz, n_fft 512, hop 160, win 400).

    python benchmarks/stft.py [--seconds 10] [--repeats 5]

Prints the median over repeats of milliseconds of CPU spent per second of audio, fed the
way the live graph feeds it (10 ms chunks) and in one block, for the streaming STFT,
log-mel, streaming ISTFT and the whole Stft node (including wire encoding), with
``torch.stft`` for reference. Lower is better; 1000 ms per second would be real time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.dsp import StftConfig, StreamingIstft, StreamingStft, log_mel, stft  # noqa: E402


def per_second_ms(run: Callable[[], None], seconds: float, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3 / seconds)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = StftConfig()
    n = int(args.seconds * cfg.sample_rate_hz)
    x = (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)
    chunk = cfg.sample_rate_hz // 100
    frames = stft(x, cfg)
    fb = cfg.mel_filterbank

    def streaming(block: int) -> Callable[[], None]:
        def run() -> None:
            engine = StreamingStft(cfg)
            for i in range(0, n, block):
                engine.push(x[i:i + block])
        return run

    def istft_stream() -> None:
        inverse = StreamingIstft(cfg)
        for i in range(len(frames)):
            inverse.push(frames[i:i + 1])
        inverse.flush()

    def node() -> None:
        from nodes.stft import Stft
        from pipeline.harness import Harness
        from pipeline.messages import AudioChunk

        with Harness(Stft) as h:
            for i in range(0, n, chunk):
                h.feed("audio", AudioChunk(samples=x[i:i + chunk], first_sample=i))

    rows = [
        ("streaming STFT, 10 ms chunks", streaming(chunk)),
        ("streaming STFT, 1 s blocks", streaming(cfg.sample_rate_hz)),
        ("log-mel (80 bands) from frames", lambda: log_mel(frames, fb)),
        ("streaming ISTFT, 1 frame at a time", istft_stream),
        ("Stft node via harness (+ wire encode/decode), 10 ms chunks", node),
    ]
    try:
        import torch

        torch.set_num_threads(1)
        xt = torch.from_numpy(x)
        w = torch.hann_window(400, periodic=True)
        rows.append(("reference: torch.stft float32, whole signal",
                     lambda: torch.stft(xt, 512, 160, 400, window=w, center=False, return_complex=True)))
    except ImportError:
        pass

    print(f"audio front end cost, {args.seconds:g} s of 16 kHz audio, median of {args.repeats}")
    print(f"{'what':62s} {'ms per s of audio':>18s} {'x real time':>12s}")
    for name, run in rows:
        ms = per_second_ms(run, args.seconds, args.repeats)
        print(f"{name:62s} {ms:18.3f} {1000 / ms:12.0f}")


if __name__ == "__main__":
    main()
