"""ONNX → serialized TensorRT plan with the TensorRT Python API (written for TensorRT 10 and 11).

Precision differs between majors, and this module is where that is handled:
- TensorRT 10 (weakly typed): ``BuilderFlag.FP16`` lets the builder pick FP16 kernels per layer.
- TensorRT 11 removed the precision flags; networks are strongly typed, so precision must be in the
  graph. FP16 is then obtained by converting the ONNX to FP16 with FP32 inputs/outputs
  (``onnxconverter-common``) before parsing.
INT8 is explicit quantization only: the ONNX must already carry QuantizeLinear/DequantizeLinear
pairs (e.g. from ``onnxruntime.quantization.quantize_static(..., quant_format=QDQ)`` or NVIDIA
ModelOpt). Implicit calibration is deprecated in TensorRT 10 and gone in 11, so it is not offered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

from engines.backends.engine import EngineError, require

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
ProfileShapes = Mapping[str, tuple[Shape, Shape, Shape]]

#: (min, opt, max) for a dynamic leading axis when the caller gives no profile
DEFAULT_BATCH_RANGE = (1, 1, 8)


class EngineBuildError(EngineError):
    pass


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = True
    int8: bool = False
    #: input name → (min, opt, max) shapes; inputs with only a dynamic batch axis may be left out
    profile: ProfileShapes = field(default_factory=dict)
    workspace_bytes: int = 1 << 30
    #: 0–5; None keeps TensorRT's default (3). Higher tries more tactics: slower build, maybe faster engine
    optimization_level: int | None = None

    def key_fields(self) -> dict[str, Any]:
        """What changes the plan, for `tensorrt_cache.PlanKey.build`."""
        return {
            "fp16": self.fp16,
            "int8": self.int8,
            "profile": {k: [list(s) for s in v] for k, v in sorted(self.profile.items())},
            "workspace_bytes": self.workspace_bytes,
            "optimization_level": self.optimization_level,
        }


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that writes into Python logging instead of stdout."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = {
                trt.Logger.INTERNAL_ERROR: logging.CRITICAL,
                trt.Logger.ERROR: logging.ERROR,
                trt.Logger.WARNING: logging.WARNING,
                trt.Logger.INFO: logging.DEBUG,
            }.get(severity, logging.DEBUG)
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def has_explicit_quantization(onnx_bytes: bytes) -> bool:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def to_fp16_onnx(onnx_bytes: bytes) -> bytes:
    """FP16 weights and activations, FP32 inputs and outputs (callers keep feeding float32)."""
    import onnx

    float16 = require("onnxconverter_common.float16", "tensorrt", "tensorrt")
    model = float16.convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()


def profile_for(name: str, shape: Shape, given: ProfileShapes) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) for one network input whose ``shape`` has -1 where it is dynamic."""
    if name in given:
        low, opt, high = (tuple(int(d) for d in s) for s in given[name])
        for s in (low, opt, high):
            if len(s) != len(shape) or any(d != -1 and d != g for d, g in zip(shape, s)):
                raise EngineBuildError(f"profile shape {s} for {name!r} does not fit the network's {shape}")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise EngineBuildError(f"profile for {name!r} must have min <= opt <= max, got {low}, {opt}, {high}")
        return low, opt, high
    dynamic = [i for i, d in enumerate(shape) if d == -1]
    if dynamic != [0]:
        raise EngineBuildError(
            f"input {name!r} {shape} has dynamic axes {dynamic}: give its (min, opt, max) shapes in `profile`"
        )
    return tuple(tuple([b, *shape[1:]]) for b in DEFAULT_BATCH_RANGE)  # type: ignore[return-value]


def build_plan(trt: ModuleType, onnx_bytes: bytes, options: BuildOptions, timing_cache: bytes = b"") -> tuple[bytes, bytes]:
    """Build and serialize an engine; returns (plan, updated timing cache).

    The timing cache holds measured tactic timings, so a rebuild (new ONNX, same GPU) skips most
    autotuning: minutes become seconds on Jetson.
    """
    fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
    if options.int8 and not has_explicit_quantization(onnx_bytes):
        raise EngineBuildError(
            "int8 needs an ONNX with explicit QuantizeLinear/DequantizeLinear nodes (TensorRT calibration is "
            "not supported); quantize it first, e.g. onnxruntime.quantization.quantize_static(quant_format=QDQ)"
        )
    if options.fp16 and fp16_flag is None and not options.int8:
        onnx_bytes = to_fp16_onnx(onnx_bytes)  # TensorRT 11+: strongly typed, precision is in the graph

    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if fp16_flag is None and strongly_typed is not None:
        flags |= 1 << int(strongly_typed)  # always on in 11.x; stated for clarity
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse the ONNX model: {errors or 'no detail'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if options.fp16 and fp16_flag is not None:
        config.set_flag(fp16_flag)
    if options.int8 and getattr(trt.BuilderFlag, "INT8", None) is not None:
        config.set_flag(trt.BuilderFlag.INT8)  # TensorRT 10 weak typing: lets Q/DQ layers run in INT8

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if -1 in shape:
            profile = profile or builder.create_optimization_profile()
            low, opt, high = profile_for(tensor.name, shape, options.profile)
            profile.set_shape(tensor.name, low, opt, high)
    if profile is not None:
        config.add_optimization_profile(profile)

    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError("TensorRT failed to build the engine (see the TensorRT log lines above)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())
