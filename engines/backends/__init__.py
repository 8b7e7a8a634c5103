"""The runtimes an `Engine` can sit on, what each needs installed, and how to tell if it can run here.

Probes are cheap and import nothing heavy unless the package is present, so ``auto`` can ask every
backend without a CPU-only install importing TensorRT or initialising CUDA needlessly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

#: backend name → (module that implements it, packages it imports, pip extra that brings them)
BACKENDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tensorrt": ("engines.backends.tensorrt_backend", ("tensorrt", "cuda.bindings"), "tensorrt"),
    "onnxruntime": ("engines.backends.onnxruntime_backend", ("onnxruntime",), ""),
    "torch": ("engines.backends.torch_backend", ("torch",), "torch"),
}


@dataclass(frozen=True)
class Probe:
    """What a backend can do on this machine: ``installed`` its packages, ``gpu`` an NVIDIA path.

    ``gpu_kind`` distinguishes compiled paths ("tensorrt": the TensorRT builder or ORT's TensorRT
    EP) from plain CUDA ("cuda"), which `engines.loader.choose_backend` ranks differently.
    """

    backend: str
    installed: bool
    gpu_kind: str | None = None
    detail: str = ""


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package missing ("cuda" for "cuda.bindings")
        return False


def missing_packages(backend: str) -> list[str]:
    return [p for p in BACKENDS[backend][1] if not installed(p)]


def probe(backend: str) -> Probe:
    """Ask one backend what it can do here; never raises."""
    missing = missing_packages(backend)
    if missing:
        return Probe(backend, False, None, f"missing {', '.join(missing)}")
    try:
        return importlib.import_module(BACKENDS[backend][0]).probe()
    except Exception as exc:  # a broken install must not break `auto` for the others
        return Probe(backend, False, None, f"probe failed: {exc}")
