"""Plain PyTorch: eager on CPU; FP16 and CUDA-graph replay on NVIDIA GPUs without TensorRT.

Small encoders on a GPU are launch-bound (ResNet-18 batch 1 on an H100: 2.4 ms eager, 0.39 ms as
an FP16 CUDA graph, ../shared/ENVIRONMENT.md), so on CUDA each input shape is captured once into a
graph with static input/output tensors and then replayed: one launch per call instead of one per
layer. The torch backend needs a registered model name (it runs the torch module, not ONNX).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engines.backends import Probe
from engines.backends.engine import Engine, EngineError, TensorInfo, require
from engines.models import ModelSpec

log = logging.getLogger(__name__)

#: replays before capture: lets cuDNN pick algorithms and the caching allocator settle
WARMUP_RUNS = 3


def _has_cuda_driver() -> bool:
    """Whether libcuda loads: a dlopen of ``libcuda.so.1``, as the CUDA runtime itself does (it finds
    the driver in ldconfig's cache, on LD_LIBRARY_PATH, and where containers mount it outside the
    cache). Not ``ctypes.util.find_library``: it runs ``ldconfig -p`` in a subprocess, ~50 ms of CPU
    in every node that opens a model on "auto" (more on a loaded machine; issue 15), and it only
    adds drivers that are listed but cannot load, on which torch would find no CUDA either."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def probe() -> Probe:
    if not _has_cuda_driver():
        # no NVIDIA driver: say so without paying ~1 s to import torch (auto may not need it)
        return Probe("torch", True, None, "no NVIDIA driver (libcuda) found")
    import torch

    if torch.cuda.is_available():
        return Probe("torch", True, "cuda", f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    return Probe("torch", True, None, f"torch {torch.__version__}, CPU only")


class _CapturedGraph:
    """One CUDA graph for one input shape, with the static tensors it reads and writes."""

    def __init__(self, torch: Any, module: Any, static_inputs: list[Any]) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                module(*static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = _as_tuple(module(*static_inputs))
        self.static_inputs = static_inputs


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        fp16: bool | None = None,
        cuda_graph: bool | None = None,
        threads: int | None = None,
    ) -> None:
        torch = require("torch", "torch", "train")
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("torch backend: device 'cuda' asked for, but torch sees no CUDA device")
        on_gpu = device.startswith("cuda")
        # FP16 on CPU is slower than FP32 and loses accuracy, so it is a GPU-only default
        self._fp16 = on_gpu if fp16 is None else fp16
        self._use_graphs = on_gpu if cuda_graph is None else cuda_graph
        if self._use_graphs and not on_gpu:
            raise EngineError("torch backend: CUDA graphs need device 'cuda'")
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.precision = "fp16" if self._fp16 else "fp32"
        self._module = spec.build().to(device)
        if self._fp16:
            self._module = self._module.half()
        self._spec = spec
        self._graphs: dict[tuple[tuple[int, ...], ...], _CapturedGraph] = {}
        self.inputs = tuple(
            TensorInfo(s.name, _dynamic_shape(spec, s.name, s.example_shape), np.dtype(s.dtype)) for s in spec.inputs
        )
        self.outputs = self._output_infos()

    def _output_infos(self) -> tuple[TensorInfo, ...]:
        """Output shapes from one example run (a torch module does not declare them)."""
        with self._torch.inference_mode():
            example = [self._to_device(a) for a in self._spec.example_inputs().values()]
            outputs = _as_tuple(self._module(*example))
        return tuple(
            TensorInfo(name, _dynamic_shape(self._spec, name, tuple(out.shape)), np.dtype(np.float32))
            for name, out in zip(self._spec.outputs, outputs)
        )

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        arrays = [inputs[t.name] for t in self.inputs]
        with torch.inference_mode():
            if self._use_graphs:
                outputs = self._replay(arrays)
            else:
                tensors = [self._to_device(a) for a in arrays]
                outputs = _as_tuple(self._module(*tensors))
            return {
                name: out.float().cpu().numpy() if self._fp16 else out.cpu().numpy()
                for name, out in zip(self._spec.outputs, outputs)
            }

    def _to_device(self, array: np.ndarray) -> Any:
        tensor = self._torch.from_numpy(array).to(self.device, non_blocking=True)
        return tensor.half() if self._fp16 and tensor.is_floating_point() else tensor

    def _replay(self, arrays: list[np.ndarray]) -> tuple[Any, ...]:
        key = tuple(a.shape for a in arrays)
        graph = self._graphs.get(key)
        if graph is None:
            log.info("torch: capturing a CUDA graph for input shapes %s", key)
            graph = self._graphs[key] = _CapturedGraph(self._torch, self._module, [self._to_device(a) for a in arrays])
        for static, array in zip(graph.static_inputs, arrays):
            static.copy_(self._torch.from_numpy(array), non_blocking=True)
        graph.graph.replay()
        return graph.static_outputs

    def close(self) -> None:
        self._graphs.clear()


def _dynamic_shape(spec: ModelSpec, name: str, shape: tuple[int, ...]) -> tuple[int | None, ...]:
    axes = spec.dynamic_axes.get(name, {})
    return tuple(None if i in axes else d for i, d in enumerate(shape))


def _as_tuple(output: Any) -> tuple[Any, ...]:
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def open_engine(spec: ModelSpec, **options: Any) -> TorchEngine:
    return TorchEngine(spec, **options)
