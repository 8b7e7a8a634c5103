"""ONNX Runtime: the embedded default on CPU, and TensorRT EP → CUDA EP where onnxruntime-gpu is.

Provider order matters: ORT gives each node to the first provider that takes it, so TensorRT EP
first (fused FP16 kernels), CUDA EP for what TensorRT rejects, CPU last. TensorRT EP builds its
engine on first run (seconds to minutes), so its engine and timing caches go in a folder keyed by
the ONNX hash, ORT version and GPU; ORT itself does not invalidate them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engines.backends import Probe
from engines.backends.engine import BackendUnavailable, Engine, TensorInfo, require
from engines.backends.cache_dir import default_cache_dir, digest, file_sha256

log = logging.getLogger(__name__)

TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"

# ONNX tensor element types ORT reports as strings
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
           "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def probe() -> Probe:
    import onnxruntime as ort

    available = ort.get_available_providers()
    kind = "tensorrt" if TRT_EP in available else "cuda" if CUDA_EP in available else None
    return Probe("onnxruntime", True, kind, f"providers {available}")


def provider_chain(
    available: Sequence[str],
    *,
    device: str = "auto",
    fp16: bool = True,
    cache_dir: Path | None = None,
    device_id: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    """The (provider, options) list to hand ``InferenceSession``, best first, CPU always last.

    ``device``: "cpu" forces CPU; "auto"/"cuda" use the GPU providers that are installed.
    """
    chain: list[tuple[str, dict[str, Any]]] = []
    if device != "cpu":
        if TRT_EP in available:
            options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": fp16}
            if cache_dir is not None:
                options |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(cache_dir),
                }
            chain.append((TRT_EP, options))
        if CUDA_EP in available:
            chain.append((CUDA_EP, {"device_id": device_id}))
    chain.append((CPU_EP, {}))
    return chain


def trt_ep_cache_dir(onnx_path: Path, ort_version: str, root: Path | None = None) -> Path:
    """A folder only this ONNX file on this ORT build uses, so a changed model never reuses engines.

    ORT's own engine file names include the GPU's compute capability; the model hash and ORT
    version (which pins its TensorRT) are what ORT does not check, so they name the folder.
    """
    key = digest({"onnx_sha256": file_sha256(onnx_path), "onnxruntime": ort_version})
    return (root or default_cache_dir()) / "ort-tensorrt" / f"{onnx_path.stem}-{key}"


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        *,
        device: str = "auto",
        fp16: bool = True,
        threads: int | None = None,
        cache_dir: Path | None = None,
        device_id: int = 0,
    ) -> None:
        ort = require("onnxruntime", "onnxruntime", "")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        if device == "cuda" and not {TRT_EP, CUDA_EP} & set(available):
            raise BackendUnavailable(
                f"onnxruntime here has no GPU provider ({available}): pip install 'earshot[gpu]' (onnxruntime-gpu)"
            )
        trt_cache = None
        if device != "cpu" and TRT_EP in available:
            trt_cache = trt_ep_cache_dir(Path(onnx_path), ort.__version__, cache_dir)
            trt_cache.mkdir(parents=True, exist_ok=True)
        chain = provider_chain(available, device=device, fp16=fp16, cache_dir=trt_cache, device_id=device_id)
        self.session = ort.InferenceSession(
            os.fspath(onnx_path),
            sess_options=options,
            providers=[name for name, _ in chain],
            provider_options=[opts for _, opts in chain],
        )
        used = self.session.get_providers()
        self.device = "cpu" if used[0] == CPU_EP else f"cuda:{device_id}"
        self.precision = "fp16" if used[0] == TRT_EP and fp16 else "fp32"
        self.providers = tuple(used)
        self.inputs = tuple(_info(i) for i in self.session.get_inputs())
        self.outputs = tuple(_info(o) for o in self.session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, inputs)))

    def describe(self) -> str:
        return f"onnxruntime [{' → '.join(self.providers)}] ({self.precision})"


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(arg.name, shape, np.dtype(_DTYPES.get(arg.type, np.float32)))


def open_engine(onnx_path: Path, **options: Any) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(onnx_path, **options)
