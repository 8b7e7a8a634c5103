"""Latency of every model on every backend usable here, at batch 1 and 8.

    python benchmarks/engines.py                     # all registered models + CenterFace, usable backends
    python benchmarks/engines.py --iters 500 --models tiny_conv_test --variants torch-fp16-graph

Each row is one (model, variant, batch): p50/p99 of ``Engine.run`` wall time (numpy in, numpy
out: host↔device copies included, as a node sees it), items/s, and how many 30 fps streams that
p50 sustains if every stream sends one item per frame, batched ``batch`` at a time. The first line
says which machine the rows came from; copy both into engines/README.md.

Variants: onnxruntime (CPU, or TensorRT/CUDA EP where installed), torch-fp32 (eager), and on CUDA
machines torch-fp16, torch-fp16-graph and tensorrt (FP16 plan + CUDA graph).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.backends import probe  # noqa: E402
from engines.engine import load  # noqa: E402
from engines.models import MODELS  # noqa: E402

CENTERFACE = Path(__file__).resolve().parent.parent / "engines" / "faces" / "centerface.onnx"
CENTERFACE_SIDE_PX = 320  # what the face detector runs at (FaceDetector.max_side_px)

#: variant → (backend, options, needs a CUDA-capable backend)
VARIANTS: dict[str, tuple[str, dict, bool]] = {
    "onnxruntime": ("onnxruntime", {"device": "auto"}, False),
    "torch-fp32": ("torch", {"device": "auto", "fp16": False, "cuda_graph": False}, False),
    "torch-fp16": ("torch", {"device": "cuda", "fp16": True, "cuda_graph": False}, True),
    "torch-fp16-graph": ("torch", {"device": "cuda", "fp16": True, "cuda_graph": True}, True),
    "tensorrt": ("tensorrt", {"fp16": True, "cuda_graph": True}, True),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}"]
    import onnxruntime

    parts.append(f"onnxruntime {onnxruntime.__version__}")
    if probe("torch").installed:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


def usable_variants() -> list[str]:
    found = {name: probe(name) for name in ("onnxruntime", "torch", "tensorrt")}
    usable = []
    for variant, (backend, _opts, needs_gpu) in VARIANTS.items():
        p = found[backend]
        if p.installed and (not needs_gpu or p.gpu_kind is not None):
            usable.append(variant)
    return usable


def centerface_onnx(folder: Path) -> Path:
    """CenterFace with a dynamic batch at the detector's working size (the stored file is fixed 10x32x32)."""
    import onnx

    model = onnx.load(str(CENTERFACE))
    side, cells = CENTERFACE_SIDE_PX, CENTERFACE_SIDE_PX // 4
    initializers = {i.name for i in model.graph.initializer}
    wanted = {"input.1": (3, side)} | {name: (c, cells) for name, c in {"537": 1, "538": 2, "539": 2, "540": 10}.items()}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers or value.name not in wanted:
            continue
        channels, size = wanted[value.name]
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        for index, number in ((1, channels), (2, size), (3, size)):
            dims[index].dim_value = number
    del model.graph.value_info[:]  # stale intermediate shapes from the fixed-size export
    # this old export lists its weights as graph inputs, which blocks ORT's constant folding
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    path = folder / "centerface.onnx"
    onnx.save(model, str(path))
    return path


def time_engine(engine, inputs: dict[str, np.ndarray], iters: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        engine.run(inputs)
    times = np.empty(iters)
    for i in range(iters):
        start = time.perf_counter_ns()
        engine.run(inputs)
        times[i] = time.perf_counter_ns() - start
    return times / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=[*MODELS, "centerface"])
    parser.add_argument("--variants", nargs="*", default=None, help=f"default: usable of {list(VARIANTS)}")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime/torch")
    args = parser.parse_args(argv)

    variants = args.variants or usable_variants()
    print(f"machine: {machine()}")
    print(f"{args.iters} timed runs after {args.warmup} warm-up, numpy in/out\n")
    print("| model | variant | runs on | batch | p50 ms | p99 ms | items/s | 30 fps streams |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            source = centerface_onnx(Path(tmp)) if model == "centerface" else model
            for variant in variants:
                backend, options, _ = VARIANTS[variant]
                if model == "centerface" and backend == "torch":
                    continue  # ONNX-only model: no torch module to run
                options = dict(options)
                if args.threads and backend != "tensorrt":
                    options["threads"] = args.threads
                try:
                    engine = load(source, backend=backend, cache_dir=Path(tmp) / "cache", **options)
                except Exception as exc:  # one unusable pairing must not end the table
                    print(f"| {model} | {variant} | – | – | cannot load: {exc} | | | |")
                    continue
                shapes = {t.name: t.shape for t in engine.inputs}
                for batch in args.batches:
                    rng = np.random.default_rng(batch)
                    inputs = {n: rng.standard_normal([batch if d is None else d for d in s]).astype(np.float32)
                              for n, s in shapes.items()}
                    ms = time_engine(engine, inputs, args.iters, args.warmup)
                    p50, p99 = np.percentile(ms, [50, 99])
                    per_s = batch * 1000 / p50
                    print(f"| {model} | {variant} | {engine.describe()} | {batch} | {p50:.3f} | {p99:.3f} | "
                          f"{per_s:,.0f} | {per_s / 30:,.1f} |", flush=True)
                engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
