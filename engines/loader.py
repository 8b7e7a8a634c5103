"""The one way nodes get a model to run: ``load(name, backend="auto")`` → `Engine`.

    from engines.loader import load
    engine = load("tiny_conv_test")                  # best backend on this machine, logged
    engine = load("tiny_conv_test", backend="torch") # or pinned, e.g. from a node's config
    outputs = engine.run({"image": batch})           # dict of numpy arrays in and out

A node keeps ``backend`` as one param (default "auto") and passes it through, so moving a graph
from a laptop CPU to a Jetson is a config edit. ``model`` is a registered name
(`engines.models`) or a path to an ``.onnx`` file.

"auto" ranks what is usable here, fastest first:
  1. tensorrt          TensorRT installed and a CUDA GPU present (compiled plan, CUDA graph)
  2. onnxruntime       with TensorRT EP (onnxruntime-gpu built with TensorRT)
  3. torch on CUDA     FP16 + CUDA graphs (registered models only)
  4. onnxruntime       with CUDA EP
  5. onnxruntime CPU   the embedded default
  6. torch CPU         when onnxruntime is missing (registered models only)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from engines.backends import BACKENDS, Probe, missing_packages, probe
from engines.backends.engine import BackendUnavailable, Engine, EngineError, EngineInputError, TensorInfo
from engines.backends.cache_dir import default_cache_dir
from engines.models import MODELS, ModelSpec

__all__ = ["BackendUnavailable", "Engine", "EngineError", "EngineInputError", "ModelSource", "TensorInfo",
           "available_backends", "choose_backend", "load"]

log = logging.getLogger(__name__)

#: the ranking above: (backend, GPU kind it must report or None for CPU, needs a torch module)
AUTO_ORDER: tuple[tuple[str, str | None, bool], ...] = (
    ("tensorrt", "tensorrt", False),
    ("onnxruntime", "tensorrt", False),
    ("torch", "cuda", True),
    ("onnxruntime", "cuda", False),
    ("onnxruntime", None, False),
    ("torch", None, True),
)


#: options each backend understands; with "auto" the others are dropped, so one node config
#: (say ``threads: 1`` for CPU, ``int8: true`` for TensorRT) works whichever backend is picked
BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "onnxruntime": frozenset({"device", "fp16", "threads", "device_id"}),
    "torch": frozenset({"device", "fp16", "cuda_graph", "threads"}),
    "tensorrt": frozenset({"device", "fp16", "int8", "profile", "workspace_bytes", "optimization_level", "cuda_graph", "device_id"}),
}


@dataclass(frozen=True)
class ModelSource:
    """What was asked for: a registered model (``spec``) or a bare ONNX file (``onnx_path``)."""

    name: str
    spec: ModelSpec | None = None
    onnx_path: Path | None = None


def resolve(model: str | os.PathLike) -> ModelSource:
    if isinstance(model, str) and model in MODELS:
        return ModelSource(model, spec=MODELS[model])
    path = Path(model)
    if path.suffix == ".onnx":
        if not path.exists():
            raise FileNotFoundError(f"no ONNX file at {path}")
        return ModelSource(path.stem, onnx_path=path)
    raise KeyError(f"{model!r} is neither a registered model ({sorted(MODELS)}) nor an .onnx file")


def available_backends(names: Iterable[str] = BACKENDS) -> dict[str, Probe]:
    return {name: probe(name) for name in names}


def choose_backend(source: ModelSource, probe_backend: Callable[[str], Probe] = probe) -> tuple[str, dict[str, Any]]:
    """The backend "auto" means for ``source`` here, with the options that pin its device.

    Probes are taken lazily in ranking order, so a CPU box stops at onnxruntime without
    importing torch or TensorRT.
    """
    seen: dict[str, Probe] = {}
    for backend, gpu_kind, needs_torch_module in AUTO_ORDER:
        if needs_torch_module and source.spec is None:
            continue
        if backend not in seen:
            seen[backend] = probe_backend(backend)
        found = seen[backend]
        if found.installed and (gpu_kind is None or found.gpu_kind == gpu_kind):
            return backend, _pinned_device(backend, on_gpu=gpu_kind is not None)
    reasons = "; ".join(f"{p.backend}: {p.detail}" for p in seen.values())
    raise BackendUnavailable(f"no backend can run {source.name!r} here ({reasons}): pip install earshot")


def _pinned_device(backend: str, on_gpu: bool) -> dict[str, Any]:
    """Options that keep the backend on the device "auto" ranked it for."""
    if backend == "tensorrt":
        return {}
    if not on_gpu:
        return {"device": "cpu"}
    return {"device": "cuda" if backend == "torch" else "auto"}


#: options a backend may ignore (tuning hints); anything else it does not take is an error
HINT_OPTIONS = frozenset({"threads"})


def load(model: str | os.PathLike, backend: str = "auto", *, cache_dir: Path | None = None, **options: Any) -> Engine:
    """Open ``model`` on ``backend`` ("auto", "onnxruntime", "torch" or "tensorrt").

    ``options`` go to the backend: ``device`` ("auto"/"cpu"/"cuda"), ``fp16``, ``threads``
    (onnxruntime, torch), ``cuda_graph`` (torch, tensorrt), ``int8``, ``profile``,
    ``workspace_bytes`` (tensorrt). Compiled engines and exported test models are cached under
    ``cache_dir`` (default ``$EARSHOT_CACHE_DIR`` or ``~/.cache/earshot/engines``).
    """
    source = resolve(model)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if backend == "auto":
        backend, pinned = choose_backend(source)
        dropped = set(options) - BACKEND_OPTIONS[backend]
        if dropped:
            log.debug("engine %s: options %s do not apply to %s", source.name, sorted(dropped), backend)
        options = {**pinned, **{k: v for k, v in options.items() if k in BACKEND_OPTIONS[backend]}}
        log.info("engine %s: auto chose backend %s %s", source.name, backend, pinned or "")
    elif backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {['auto', *BACKENDS]}")
    else:
        _require_installed(backend)
        # ``threads`` sizes CPU pools: a hint every node passes, meaningless to a GPU-only backend,
        # so a config that pins ``backend: tensorrt`` must not fail on it
        options = {k: v for k, v in options.items() if k not in HINT_OPTIONS or k in BACKEND_OPTIONS[backend]}
        unknown = set(options) - BACKEND_OPTIONS[backend]
        if unknown:
            raise EngineError(f"backend {backend!r} takes no option(s) {sorted(unknown)}; "
                              f"it takes {sorted(BACKEND_OPTIONS[backend])}")

    engine = _open(source, backend, cache_dir, options)
    log.info("engine %s: %s", source.name, engine.describe())
    return engine


def _require_installed(backend: str) -> None:
    missing = missing_packages(backend)
    if missing:
        extra = BACKENDS[backend][2]
        target = f"'earshot[{extra}]'" if extra else "earshot"
        raise BackendUnavailable(
            f"backend {backend!r} needs the Python package(s) {', '.join(missing)}, not installed here: "
            f"pip install {target}"
        )


def _open(source: ModelSource, backend: str, cache_dir: Path, options: dict[str, Any]) -> Engine:
    if backend == "torch":
        if source.spec is None:
            raise EngineError(f"backend 'torch' runs registered torch models; {source.onnx_path} is only ONNX")
        from engines.backends.torch_backend import open_engine

        return open_engine(source.spec, **options)

    onnx_path = source.onnx_path
    if onnx_path is None:
        onnx_path = source.spec.onnx_file(cache_dir)
    if backend == "onnxruntime":
        from engines.backends.onnxruntime_backend import open_engine

        return open_engine(onnx_path, cache_dir=cache_dir, **options)
    from engines.backends.tensorrt_backend import open_engine

    if options.pop("device", "cuda") == "cpu":
        raise EngineError("backend 'tensorrt' runs on an NVIDIA GPU only; use onnxruntime or torch for CPU")
    if source.spec is not None and "profile" not in options:
        options["profile"] = source.spec.profile_shapes()
    return open_engine(onnx_path, model_name=source.name, cache_dir=cache_dir, **options)
