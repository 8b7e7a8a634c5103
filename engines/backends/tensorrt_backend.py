"""TensorRT: build (or load the cached) plan for this GPU, then run it from preallocated buffers.

Device buffers are allocated once, for the largest shapes the optimisation profile allows, and
bound to the execution context by tensor name up front; a call then only copies inputs in, enqueues
(or replays a CUDA graph) and copies outputs out. Fixed addresses are what make CUDA-graph capture
valid: a captured graph replays against the same pointers every time. One graph is kept per set
of input shapes, since TensorRT's launch sequence depends on them.

``trt`` and ``cuda`` are parameters so that tests can drive everything here without a GPU.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.backends import Probe
from engines.backends.engine import Engine, EngineError, EngineInputError, TensorInfo, require
from engines.backends.cache_dir import default_cache_dir
from engines.backends.cuda_runtime import CudaRuntime, gpu_count
from engines.backends.tensorrt_build import BuildOptions, build_plan, make_logger
from engines.backends.tensorrt_cache import PlanKey, PlanStore

log = logging.getLogger(__name__)


class PlanRejected(EngineError):
    """TensorRT would not deserialize a plan (the cache layer should have caught why)."""


def probe() -> Probe:
    count, why = gpu_count()
    if count == 0:
        return Probe("tensorrt", True, None, why)
    import tensorrt as trt

    return Probe("tensorrt", True, "tensorrt", f"TensorRT {trt.__version__}, {count} GPU(s)")


@dataclass
class _Binding:
    """One I/O tensor's device buffer, sized for the profile's largest shape."""

    info: TensorInfo
    min_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    pointer: int
    capacity_bytes: int
    shape: tuple[int, ...]  # what the context is currently set to


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, trt: ModuleType, cuda: Any, plan: bytes, *, cuda_graph: bool = True, precision: str = "fp16") -> None:
        self._trt, self._cuda = trt, cuda
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise PlanRejected("TensorRT could not deserialize the plan")
        self._context = self._engine.create_execution_context()
        self._use_graphs = cuda_graph
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.device = "cuda"
        self.precision = precision
        self._inputs: dict[str, _Binding] = {}
        self._outputs: dict[str, _Binding] = {}
        try:
            self._bind_all()
        except BaseException:
            self.close()
            raise
        self.inputs = tuple(b.info for b in self._inputs.values())
        self.outputs = tuple(b.info for b in self._outputs.values())

    def _bind_all(self) -> None:
        trt, engine, context = self._trt, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        for name in inputs:
            declared = tuple(engine.get_tensor_shape(name))
            if -1 in declared:
                low, _opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
            else:
                low = high = declared
            info = TensorInfo(name, tuple(None if d == -1 else d for d in declared), _np_dtype(trt, engine, name))
            # every input at its largest shape first, so output shapes below are their largest too
            if not context.set_input_shape(name, high):
                raise EngineError(f"TensorRT refused shape {high} for input {name!r}")
            self._inputs[name] = self._allocate(info, low, high)
        for name in outputs:
            declared = tuple(engine.get_tensor_shape(name))
            high = tuple(context.get_tensor_shape(name))
            info = TensorInfo(name, tuple(None if d == -1 else d for d in declared), _np_dtype(trt, engine, name))
            self._outputs[name] = self._allocate(info, high, high)

    def _allocate(self, info: TensorInfo, low: tuple[int, ...], high: tuple[int, ...]) -> _Binding:
        nbytes = math.prod(high) * info.dtype.itemsize
        pointer = self._cuda.malloc(nbytes)
        binding = _Binding(info, low, high, pointer, nbytes, high)
        if not self._context.set_tensor_address(info.name, pointer):
            raise EngineError(f"TensorRT refused the buffer for tensor {info.name!r}")
        return binding

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, context = self._cuda, self._context
        for name, array in inputs.items():
            binding = self._inputs[name]
            if not all(lo <= d <= hi for lo, d, hi in zip(binding.min_shape, array.shape, binding.max_shape)):
                raise EngineInputError(
                    f"input {name!r} shape {array.shape} is outside the engine's profile "
                    f"{binding.min_shape}..{binding.max_shape}; rebuild with a wider profile"
                )
            if array.shape != binding.shape:
                if not context.set_input_shape(name, array.shape):
                    raise EngineInputError(f"TensorRT refused shape {array.shape} for input {name!r}")
                binding.shape = array.shape
            cuda.copy_to_device(binding.pointer, array)
        self._execute()
        results = {}
        for name, binding in self._outputs.items():
            out = np.empty(tuple(context.get_tensor_shape(name)), binding.info.dtype)
            cuda.copy_to_host(out, binding.pointer)
            results[name] = out
        cuda.synchronize()
        return results

    def _execute(self) -> None:
        if not self._use_graphs:
            return self._enqueue()
        key = tuple(b.shape for b in self._inputs.values())
        graph = self._graphs.get(key)
        if graph is not None:
            self._cuda.launch_graph(graph)
            return
        # TensorRT needs one ordinary enqueue after a shape change before it can be captured;
        # that enqueue also computes this call's result, so the new graph is first replayed next call.
        self._enqueue()
        self._cuda.begin_capture()
        try:
            self._enqueue()
        finally:
            graph = self._cuda.end_capture()
        self._graphs[key] = graph

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def close(self) -> None:
        for graph in self._graphs.values():
            self._cuda.destroy_graph(graph)
        self._graphs.clear()
        for binding in [*self._inputs.values(), *self._outputs.values()]:
            self._cuda.free(binding.pointer)
        self._inputs.clear()
        self._outputs.clear()
        self._context = self._engine = None
        self._cuda.close()


def _np_dtype(trt: ModuleType, engine: Any, name: str) -> np.dtype:
    return np.dtype(trt.nptype(engine.get_tensor_dtype(name)))


def plan_key(trt: ModuleType, cuda: Any, onnx_bytes: bytes, options: BuildOptions) -> PlanKey:
    platform = cuda.platform()
    return PlanKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        tensorrt_version=str(trt.__version__),
        cuda_version=platform.cuda_version,
        compute_capability=platform.compute_capability,
        gpu_name=platform.gpu_name,
        l4t_release=platform.l4t_release,
        build=options.key_fields(),
    )


def open_engine(
    onnx_path: Path,
    *,
    model_name: str | None = None,
    fp16: bool = True,
    int8: bool = False,
    profile: dict | None = None,
    workspace_bytes: int = 1 << 30,
    optimization_level: int | None = None,
    cuda_graph: bool = True,
    cache_dir: Path | None = None,
    device_id: int = 0,
    trt: ModuleType | None = None,
    cuda: Any = None,
) -> TensorRTEngine:
    """Load this GPU's cached plan for ``onnx_path`` or build one; never load a plan built elsewhere."""
    trt = trt or require("tensorrt", "tensorrt", "tensorrt")
    cuda = cuda or CudaRuntime(device_id)
    onnx_path = Path(onnx_path)
    name = model_name or onnx_path.stem
    onnx_bytes = onnx_path.read_bytes()
    options = BuildOptions(fp16=fp16, int8=int8, profile=profile or {}, workspace_bytes=workspace_bytes,
                           optimization_level=optimization_level)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    key = plan_key(trt, cuda, onnx_bytes, options)
    store = PlanStore((cache_dir or default_cache_dir()) / "tensorrt")
    plan = store.read(name, key)
    if plan is not None:
        try:
            engine = TensorRTEngine(trt, cuda, plan, cuda_graph=cuda_graph, precision=precision)
            log.info("tensorrt: loaded cached plan %s", store.path(name, key))
            return engine
        except PlanRejected:
            log.warning("tensorrt: cached plan %s was rejected by TensorRT; rebuilding", store.path(name, key))
    log.info("tensorrt: building %s (%s, TensorRT %s, sm %s); this can take minutes",
             name, precision, key.tensorrt_version, key.compute_capability)
    started = time.monotonic()
    plan, timing_cache = build_plan(trt, onnx_bytes, options, store.read_timing_cache(key))
    path = store.write(name, key, plan)
    store.write_timing_cache(key, timing_cache)
    log.info("tensorrt: built %s in %.1f s → %s", name, time.monotonic() - started, path)
    return TensorRTEngine(trt, cuda, plan, cuda_graph=cuda_graph, precision=precision)
