"""Latency of every model on every backend usable here, at batch 1 and 8.

    python benchmarks/engines.py                     # all registered models + CenterFace, usable backends
    python benchmarks/engines.py --iters 500 --models tiny_conv_test --variants torch-fp16-graph

Each row is one (model, variant, batch): p50/p99 of ``Engine.run`` wall time (numpy in, numpy
out: host↔device copies included, as a node sees it), items/s, and how many 30 fps streams that
p50 sustains if every stream sends one item per frame, batched ``batch`` at a time, and the largest
difference of its outputs from ONNX Runtime FP32 on the CPU on the same inputs, absolute and relative
to the largest reference value (a GPU figure is only worth quoting if the GPU computes the same
model). The first line
says which machine the rows came from; copy both into engines/README.md. ``--out FILE`` also writes
them to FILE, row by row, so a one-shot run on a borrowed GPU keeps every row it got to. A
(model, variant, batch) that fails to load or run becomes a "cannot load/run: <error>" row and the
table goes on.

CenterFace is the face detector's own prepared ONNX (engines/faces/detector.py: dynamic batch and
H/W), timed at 320x320; on TensorRT it gets a profile up to the largest batch asked for.

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
from engines.loader import load  # noqa: E402
from engines.faces.detector import INPUT_NAME, prepared_model_path, tensorrt_profile  # noqa: E402
from engines.models import get  # noqa: E402
from lab.onnx_export import ensure_onnx  # noqa: E402
from engines.models import MODELS  # noqa: E402

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
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS),
                        help=f"default: usable of {list(VARIANTS)}")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime/torch")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)

    out = open(args.out, "w") if args.out else None

    def emit(line: str = "") -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    variants = args.variants or usable_variants()
    try:
        emit(f"machine: {machine()}")
        emit(f"{args.iters} timed runs after {args.warmup} warm-up, numpy in/out")
        emit()
        emit("| model | variant | runs on | batch | p50 ms | p99 ms | items/s | 30 fps streams | max diff vs ORT CPU: abs / rel |")
        emit("|---|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            cache_dir = Path(tmp) / "cache"
            for model in args.models:
                for variant in variants:
                    for row in bench(model, variant, args, cache_dir):
                        emit(row)
    finally:
        if out:
            out.close()
    return 0


def bench(model: str, variant: str, args: argparse.Namespace, cache_dir: Path):
    """Rows for one (model, variant): one per batch, or one "cannot load"/"cannot run" row per failure."""
    backend, options, _ = VARIANTS[variant]
    if model == "centerface" and backend == "torch":
        return  # ONNX-only model: no torch module to run
    options = dict(options)
    if args.threads and backend != "tensorrt":
        options["threads"] = args.threads
    try:
        if model == "centerface":
            source = prepared_model_path(cache_dir=cache_dir)
            side = CENTERFACE_SIDE_PX
            if backend == "tensorrt":
                options["profile"] = tensorrt_profile(side, max_batch=max(args.batches), opt_hw=(side, side))
        else:
            source = model
            if backend != "torch":
                ensure_onnx(get(model), cache_dir)  # a test-only model's ONNX is exported per run
        engine = load(source, backend=backend, cache_dir=cache_dir, **options)
    except Exception as exc:  # one unusable pairing must not end the table
        yield f"| {model} | {variant} | – | – | cannot load: {_one_line(exc)} | | | | |"
        return
    try:
        for batch in args.batches:
            try:
                inputs = example_inputs(model, engine, batch)
                ms = time_engine(engine, inputs, args.iters, args.warmup)
            except Exception as exc:  # e.g. a batch outside a TensorRT profile, a CUDA error
                yield f"| {model} | {variant} | {engine.describe()} | {batch} | cannot run: {_one_line(exc)} | | | | |"
                continue
            p50, p99 = np.percentile(ms, [50, 99])
            per_s = batch * 1000 / p50
            yield (f"| {model} | {variant} | {engine.describe()} | {batch} | {p50:.3f} | {p99:.3f} | "
                   f"{per_s:,.0f} | {per_s / 30:,.1f} | {deviation(source, engine, inputs, cache_dir)} |")
    finally:
        try:
            engine.close()
        except Exception as exc:  # the rows are measured; a failing release must not end the table
            print(f"{model} {variant}: close failed: {_one_line(exc)}", file=sys.stderr)


#: ONNX Runtime CPU outputs per (model, batch): every variant of a model gets the same inputs
#: (`example_inputs` seeds by batch), so the reference runs once, not once per variant
_REFERENCE: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def deviation(source, engine, inputs: dict[str, np.ndarray], cache_dir: Path) -> str:
    """Max |output − ONNX Runtime CPU FP32 output| over all outputs, and that over max |reference|."""
    try:
        key = (str(source), len(next(iter(inputs.values()))))
        if key not in _REFERENCE:
            reference = load(source, backend="onnxruntime", device="cpu", cache_dir=cache_dir)
            try:
                _REFERENCE[key] = reference.run(inputs)
            finally:
                reference.close()
        want, got = _REFERENCE[key], engine.run(inputs)
        diff = max(float(np.max(np.abs(got[k].astype(np.float64) - want[k]))) for k in want)
        scale = max(float(np.max(np.abs(want[k]))) for k in want)
        return f"{diff:.1e} / {diff / max(scale, 1e-12):.1e}"
    except Exception as exc:  # the timing stands without it
        return f"cannot compare: {_one_line(exc)}"


def example_inputs(model: str, engine, batch: int) -> dict[str, np.ndarray]:
    """Random float32 inputs: ``batch`` for the dynamic leading axis, CenterFace at 320x320."""
    rng = np.random.default_rng(batch)
    shapes = {t.name: [batch if d is None else d for d in t.shape] for t in engine.inputs}
    if model == "centerface":
        shapes[INPUT_NAME] = [batch, 3, CENTERFACE_SIDE_PX, CENTERFACE_SIDE_PX]
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _one_line(exc: BaseException) -> str:
    """An error as one table cell: type, first line, no pipes."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}".replace("|", "/")[:300]

if __name__ == "__main__":
    sys.exit(main())
