"""Registered PyTorch models → ONNX, checked and compared with PyTorch.

    python launch.py export                       every shipped model → engines/weights/NAME.onnx
    python launch.py export --model NAME --out DIR  one model (test-only models need --out)
    python launch.py export --list                what is registered
    python launch.py export --skip-export --tensorrt  build TensorRT plans from the shipped ONNX (on the GPU box)

Why ONNX is the hand-off: it is the one file every backend reads (ONNX Runtime directly, TensorRT
through its ONNX parser), so a model is exported once and the engine cache keys on its bytes.
The TorchScript exporter (``dynamo=False``) is used because it writes a single self-contained file
with no extra dependency; opset 17 is the floor so LayerNorm and friends export as single ops.
STFTs stay outside exported graphs: complex STFT does not export (pytorch#65666, #107677).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.models import MODELS, ModelSpec, get

log = logging.getLogger(__name__)

MIN_OPSET = 17
#: batch sizes the exported graph is checked at, so a broken dynamic batch axis is caught here
CHECK_BATCHES = (1, 3)


@dataclass(frozen=True)
class ExportReport:
    model: str
    path: Path
    opset: int
    max_abs_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def line(self) -> str:
        verdict = "ok" if self.ok else f"FAILED (> {self.tolerance:g})"
        return f"{self.model:<20} opset {self.opset}  max |onnx - torch| = {self.max_abs_error:.2e}  {verdict}  → {self.path}"


def export_onnx(spec: ModelSpec, path: Path) -> Path:
    """Write ``spec``'s model as ONNX at ``path`` and validate it with ``onnx.checker``."""
    import onnx
    import torch

    if spec.opset < MIN_OPSET:
        raise ValueError(f"model {spec.name!r}: opset {spec.opset} < {MIN_OPSET}")
    module = spec.build()
    args = tuple(torch.from_numpy(a) for a in spec.example_inputs().values())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, torch.jit.TracerWarning))
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=[s.name for s in spec.inputs],
            output_names=list(spec.outputs),
            dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)  # readers never see a half-written model
    return path


def max_abs_error(spec: ModelSpec, onnx_path: Path, batches: tuple[int, ...] = CHECK_BATCHES) -> float:
    """Largest |ONNX Runtime CPU − PyTorch| over every output, at each batch size."""
    import onnxruntime as ort
    import torch

    module = spec.build()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        axes = {"batch": batch} if _has_axis(spec, "batch") else {}
        inputs = spec.example_inputs(seed=batch, **axes)
        with torch.inference_mode():
            expected = module(*(torch.from_numpy(a) for a in inputs.values()))
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = session.run(list(spec.outputs), inputs)
        for want, have in zip(expected, got):
            worst = max(worst, float(np.max(np.abs(want.numpy() - have))))
    return worst


def export_model(spec: ModelSpec, out_dir: Path | None = None) -> ExportReport:
    if out_dir is None and not spec.shipped:
        raise ValueError(f"{spec.name!r} is a test-only model: give an output folder (--out), not engines/weights")
    path = (out_dir / f"{spec.name}.onnx") if out_dir else spec.onnx_path
    export_onnx(spec, path)
    return ExportReport(spec.name, path, spec.opset, max_abs_error(spec, path), spec.atol)


_exported_this_process: dict[tuple[str, Path], Path] = {}


def ensure_onnx(spec: ModelSpec, cache_dir: Path) -> Path:
    """Export a test-only model into the engine cache (once per process, so its ONNX never goes
    stale against the code) where `engines.loader.load` looks for it; shipped models must already
    be exported."""
    if spec.shipped:
        return spec.onnx_file(cache_dir)
    key = (spec.name, Path(cache_dir))
    if key not in _exported_this_process:
        path = export_onnx(spec, spec.exported_path(cache_dir))
        log.info("exported test-only model %s to %s", spec.name, path)
        _exported_this_process[key] = path
    return _exported_this_process[key]


def build_tensorrt(spec: ModelSpec, out_dir: Path | None) -> bool:
    """Build (or find cached) this machine's TensorRT plan, so the first live run starts at once."""
    import time

    from engines.loader import EngineError, load

    source = (out_dir / f"{spec.name}.onnx") if out_dir else spec.onnx_path if spec.shipped else spec.name
    started = time.monotonic()
    try:
        engine = load(source, backend="tensorrt", profile=spec.profile_shapes())
    except (EngineError, FileNotFoundError) as exc:
        print(f"{spec.name:<20} tensorrt: FAILED: {exc}", file=sys.stderr)
        return False
    print(f"{spec.name:<20} tensorrt: {engine.describe()} ready in {time.monotonic() - started:.1f} s")
    engine.close()
    return True


def _has_axis(spec: ModelSpec, axis: str) -> bool:
    return any(axis in axes.values() for axes in spec.dynamic_axes.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch.py export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model name (repeatable); default: every shipped model")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: engines/weights)")
    parser.add_argument("--list", action="store_true", help="list registered models and exit")
    parser.add_argument("--skip-export", action="store_true", help="use the ONNX files already there (no torch needed)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="then build and cache this GPU's TensorRT plan for each model (FP16)")
    args = parser.parse_args(argv)

    if args.list:
        for spec in MODELS.values():
            kind = "shipped" if spec.shipped else "test-only"
            print(f"{spec.name:<20} {kind:<9} {spec.description}")
        return 0
    try:
        specs = [get(name) for name in args.model] if args.model else [s for s in MODELS.values() if s.shipped]
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if not specs:
        print("no shipped models are registered yet (see engines/models/__init__.py); "
              "try --model tiny_conv_test --out /tmp/onnx")
        return 0
    failed = 0
    for spec in specs:
        if not args.skip_export:
            try:
                report = export_model(spec, args.out)
            except (ValueError, FileNotFoundError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(report.line())
            failed += not report.ok
        if args.tensorrt:
            failed += not build_tensorrt(spec, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
