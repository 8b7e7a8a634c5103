"""The few CUDA runtime calls the TensorRT backend makes, through NVIDIA's ``cuda-bindings``.

Why cuda-bindings rather than torch for device memory: it is NVIDIA's own thin binding (what the
TensorRT samples use), a few MB instead of a multi-GB torch install, and it exists on Jetson. Every
call returns an error code first; `_check` turns a failure into one exception naming the call.
Tests substitute an object with these same methods; nothing here is used without a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends.engine import EngineError, require

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


class CudaError(EngineError):
    pass


@dataclass(frozen=True)
class GpuPlatform:
    """Everything about this machine that a compiled engine depends on."""

    cuda_version: str  # runtime, e.g. "13.0"
    compute_capability: str  # e.g. "9.0" (H100), "8.7" (Jetson Orin)
    gpu_name: str
    l4t_release: str | None  # e.g. "R36.4.3" on Jetson, None elsewhere


def read_l4t_release(path: Path = TEGRA_RELEASE) -> str | None:
    """Parse ``# R36 (release), REVISION: 4.3, ...`` into ``"R36.4.3"``; None off Jetson.

    The L4T release pins the Jetson driver and TensorRT build, so a plan from another JetPack
    must not be reused even when the TensorRT version string matches.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else text.strip().splitlines()[0][:64] or None


class CudaRuntime:
    """One device and one stream; device pointers are plain ints (what TensorRT takes)."""

    def __init__(self, device: int = 0) -> None:
        self._rt = require("cuda.bindings.runtime", "tensorrt", "tensorrt")
        self.device = device
        self._check("cudaSetDevice", self._rt.cudaSetDevice(device))
        (self._stream,) = self._check("cudaStreamCreate", self._rt.cudaStreamCreate())

    # -- facts ---------------------------------------------------------------------------------
    def platform(self) -> GpuPlatform:
        (version,) = self._check("cudaRuntimeGetVersion", self._rt.cudaRuntimeGetVersion())
        (props,) = self._check("cudaGetDeviceProperties", self._rt.cudaGetDeviceProperties(self.device))
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return GpuPlatform(
            cuda_version=f"{version // 1000}.{(version % 1000) // 10}",
            compute_capability=f"{props.major}.{props.minor}",
            gpu_name=name,
            l4t_release=read_l4t_release(),
        )

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    # -- memory --------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        (ptr,) = self._check("cudaMalloc", self._rt.cudaMalloc(max(nbytes, 1)))
        return int(ptr)

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self._rt.cudaFree(ptr))

    def copy_to_device(self, ptr: int, array: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self._rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self._stream))

    def copy_to_host(self, array: np.ndarray, ptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self._rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self._stream))

    def synchronize(self) -> None:
        self._check("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(self._stream))

    # -- CUDA graphs ---------------------------------------------------------------------------
    def begin_capture(self) -> None:
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check("cudaStreamBeginCapture", self._rt.cudaStreamBeginCapture(self._stream, mode))

    def end_capture(self) -> Any:
        """Finish capture and return an instantiated, launchable graph."""
        (graph,) = self._check("cudaStreamEndCapture", self._rt.cudaStreamEndCapture(self._stream))
        (graph_exec,) = self._check("cudaGraphInstantiate", self._rt.cudaGraphInstantiate(graph, 0))
        self._check("cudaGraphDestroy", self._rt.cudaGraphDestroy(graph))
        return graph_exec

    def launch_graph(self, graph_exec: Any) -> None:
        self._check("cudaGraphLaunch", self._rt.cudaGraphLaunch(graph_exec, self._stream))

    def destroy_graph(self, graph_exec: Any) -> None:
        self._check("cudaGraphExecDestroy", self._rt.cudaGraphExecDestroy(graph_exec))

    def close(self) -> None:
        self._check("cudaStreamDestroy", self._rt.cudaStreamDestroy(self._stream))

    # -- errors --------------------------------------------------------------------------------
    def _check(self, call: str, result: Any) -> tuple:
        """cuda-bindings returns ``(err, *values)``; raise on err, return the values."""
        result = result if isinstance(result, tuple) else (result,)
        err, values = result[0], result[1:]
        if int(err) != 0:
            _, text = self._rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise CudaError(f"{call} failed: {getattr(err, 'name', err)} ({text})")
        return values


def gpu_count() -> tuple[int, str]:
    """(number of CUDA devices, why zero) without raising; used by probes."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError as exc:
        return 0, f"cuda-bindings not importable: {exc}"
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0:
        return 0, f"no usable CUDA device ({getattr(err, 'name', err)})"
    return int(count), ""
