"""Test doubles for the ``tensorrt`` module and the CUDA runtime (TensorRT cannot be installed here).

The fakes implement only the calls `engines.backends.tensorrt_*` makes, with the documented names
and return conventions (bool from set_* calls, None from a failed build/deserialize). The "plan"
is JSON that carries the ONNX bytes; the fake execution context runs it with ONNX Runtime on
whatever bytes sit at the device addresses bound to each tensor name, so a wrong binding, shape
or copy shows up as wrong numbers, exactly as it would on a GPU.
"""

from __future__ import annotations

import base64
import json
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from engines.backends.cuda_runtime import GpuPlatform


# --------------------------------------------------------------------------------------- CUDA
class FakeCuda:
    """Host memory behind integer "device pointers"; graph capture records enqueued work."""

    stream_handle = 0xC0FFEE

    def __init__(self, platform: GpuPlatform | None = None) -> None:
        self._platform = platform or GpuPlatform("12.6", "8.7", "Orin (nvgpu)", "R36.4.3")
        self.memory: dict[int, bytearray] = {}
        self._next = 0x1000
        self.capturing: list[Callable[[], None]] | None = None
        self.graphs_launched = 0
        self.graphs_destroyed = 0
        self.closed = False

    def platform(self) -> GpuPlatform:
        return self._platform

    def malloc(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + max(nbytes, 1) + 256
        self.memory[ptr] = bytearray(max(nbytes, 1))
        return ptr

    def free(self, ptr: int) -> None:
        del self.memory[ptr]

    def copy_to_device(self, ptr: int, array: np.ndarray) -> None:
        assert array.nbytes <= len(self.memory[ptr]), "host→device copy overflows the buffer"
        self.memory[ptr][: array.nbytes] = array.tobytes()

    def copy_to_host(self, array: np.ndarray, ptr: int) -> None:
        assert array.nbytes <= len(self.memory[ptr]), "device→host copy overflows the buffer"
        array[...] = np.frombuffer(bytes(self.memory[ptr][: array.nbytes]), array.dtype).reshape(array.shape)

    def synchronize(self) -> None:
        pass

    def begin_capture(self) -> None:
        self.capturing = []

    def end_capture(self) -> list:
        graph, self.capturing = self.capturing, None
        return graph

    def launch_graph(self, graph: list) -> None:
        self.graphs_launched += 1
        for work in graph:
            work()

    def destroy_graph(self, graph: list) -> None:
        self.graphs_destroyed += 1

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------------ TensorRT
@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class FakeNetwork:
    flags: int
    inputs: list[_Tensor] = field(default_factory=list)
    outputs: list[_Tensor] = field(default_factory=list)
    onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class FakeParser:
    def __init__(self, network: FakeNetwork, logger: Any) -> None:
        self.network, self.errors = network, []

    def parse(self, data: bytes) -> bool:
        import onnx

        try:
            model = onnx.load_from_string(data)
            onnx.checker.check_model(model)
        except Exception as exc:
            self.errors.append(f"In node -1 (parseGraph): INVALID_GRAPH: {exc}")
            return False
        graph_inputs = {i.name for i in model.graph.initializer}

        def tensors(values):
            return [_Tensor(v.name, tuple(d.dim_value if d.HasField("dim_value") else -1
                                          for d in v.type.tensor_type.shape.dim))
                    for v in values if v.name not in graph_inputs]

        self.network.inputs, self.network.outputs = tensors(model.graph.input), tensors(model.graph.output)
        self.network.onnx = data
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, low, opt, high) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data + b"+tactics"


class FakeConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.profiles: list[FakeProfile] = []
        self.pool: dict[str, int] = {}
        self.timing_cache: FakeTimingCache | None = None
        self.builder_optimization_level = 3

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pool[pool] = size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(data)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache:
        return self.timing_cache


class FakeBuilder:
    def __init__(self, module: "FakeTensorRT", logger: Any) -> None:
        self.module = module

    def create_network(self, flags: int = 0) -> FakeNetwork:
        return FakeNetwork(flags)

    def create_builder_config(self) -> FakeConfig:
        return FakeConfig()

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes | None:
        self.module.builds.append({"flags": sorted(config.flags), "network_flags": network.flags,
                                   "profiles": [p.shapes for p in config.profiles],
                                   "timing_cache_in": config.timing_cache.data if config.timing_cache else None,
                                   "onnx": network.onnx})
        if self.module.fail_build:
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        return json.dumps({
            "fake_plan": True,
            "onnx": base64.b64encode(network.onnx).decode(),
            "inputs": [[t.name, t.shape] for t in network.inputs],
            "outputs": [[t.name, t.shape] for t in network.outputs],
            "profile": {k: [list(s) for s in v] for k, v in profile.items()},
        }).encode()


class FakeEngine:
    def __init__(self, module: "FakeTensorRT", plan: dict) -> None:
        import onnxruntime as ort

        self.module = module
        self.plan = plan
        self.session = ort.InferenceSession(base64.b64decode(plan["onnx"]), providers=["CPUExecutionProvider"])
        self.input_shapes = {n: tuple(s) for n, s in plan["inputs"]}
        self.output_shapes = {n: tuple(s) for n, s in plan["outputs"]}
        # TensorRT orders I/O tensors by its own rule; put outputs first to catch index-order bugs
        self.names = [*self.output_shapes, *self.input_shapes]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.input_shapes else "OUTPUT"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.input_shapes.get(name) or self.output_shapes[name]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.plan["profile"][name]]

    def create_execution_context(self) -> "FakeContext":
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.enqueues = 0

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(shape)
        profile = self.engine.plan["profile"].get(name)
        if profile and not all(lo <= d <= hi for lo, d, hi in zip(profile[0], shape, profile[2])):
            return False
        self.shapes[name] = shape
        return True

    def _outputs_for(self, shapes: dict) -> dict[str, np.ndarray]:
        return dict(zip(self.engine.output_shapes, self.engine.session.run(
            list(self.engine.output_shapes), {n: np.zeros(s, np.float32) for n, s in shapes.items()})))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.input_shapes:
            return self.shapes[name]
        return self._outputs_for(self.shapes)[name].shape

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream: int) -> bool:
        cuda = self.engine.module.cuda
        assert stream == cuda.stream_handle
        shapes = dict(self.shapes)

        def work() -> None:
            feeds = {}
            for name, shape in shapes.items():
                array = np.empty(shape, np.float32)
                cuda.copy_to_host(array, self.addresses[name])
                feeds[name] = array
            for name, out in zip(self.engine.output_shapes, self.engine.session.run(list(self.engine.output_shapes), feeds)):
                cuda.copy_to_device(self.addresses[name], np.ascontiguousarray(out))

        self.enqueues += 1
        if cuda.capturing is not None:
            cuda.capturing.append(work)
        else:
            work()
        return True


class FakeRuntime:
    def __init__(self, module: "FakeTensorRT", logger: Any) -> None:
        self.module = module

    def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
        self.module.deserializations += 1
        try:
            parsed = json.loads(plan)
        except ValueError:
            return None
        if not parsed.get("fake_plan") or self.module.reject_plans:
            return None
        return FakeEngine(self.module, parsed)


class FakeTensorRT(types.ModuleType):
    """A stand-in ``tensorrt`` module. ``major=11`` drops the FP16/INT8 builder flags, as TensorRT 11 does."""

    def __init__(self, cuda: FakeCuda, version: str = "10.9.0.34", major: int | None = None) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.cuda = cuda
        self.builds: list[dict] = []
        self.deserializations = 0
        self.fail_build = False
        self.reject_plans = False
        major = major or int(version.split(".")[0])
        flags = {"TF32": "TF32"} | ({"FP16": "FP16", "INT8": "INT8"} if major < 11 else {})
        self.BuilderFlag = types.SimpleNamespace(**flags)
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                pass

        self.ILogger = ILogger
        self.Logger = ILogger
        module = self
        self.Builder = lambda logger: FakeBuilder(module, logger)
        self.Runtime = lambda logger: FakeRuntime(module, logger)
        self.OnnxParser = FakeParser

    @staticmethod
    def nptype(dtype: str) -> type:
        return {"float32": np.float32, "float16": np.float16, "int32": np.int32}[dtype]
