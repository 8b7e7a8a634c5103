"""What every backend shares: the `Engine` contract nodes program against, and its errors.

Nodes hold an `Engine` and call `run()`; they never learn which runtime is underneath, so that
switching backend is one config field and a model can move from CPU to TensorRT without a node edit.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import Mapping

import numpy as np


class EngineError(RuntimeError):
    """Something about a model or backend that a node cannot work around."""


class BackendUnavailable(EngineError):
    """The asked-for backend cannot run here (package missing, no GPU)."""


class EngineInputError(EngineError, ValueError):
    """`run()` was handed tensors that do not match the engine's inputs."""


def require(package: str, backend: str, extra: str) -> ModuleType:
    """Import an optional package or raise the one error that says how to get it.

    Optional runtimes (tensorrt, torch, cuda-bindings) are imported only when a backend that needs
    them is asked for, so a CPU-only install never pays for or trips over them.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        target = f"'earshot[{extra}]'" if extra else "earshot"
        raise BackendUnavailable(
            f"backend {backend!r} needs the Python package {package!r}, which is not installed "
            f"({exc}): pip install {target}"
        ) from exc


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: ``None`` in ``shape`` marks a dimension that may vary (e.g. batch)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape)
        )


class Engine(ABC):
    """A loaded model: numpy in, numpy out, whatever runs it.

    ``backend`` names the runtime ("onnxruntime", "torch", "tensorrt"); ``device`` and ``precision``
    say where and how it runs, for logs and benchmark tables.
    """

    backend: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on inputs already checked and cast by `run`."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(self.check_inputs(inputs))

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fail with a message naming the tensor, rather than deep inside a runtime."""
        names = {t.name for t in self.inputs}
        missing, extra = names - set(inputs), set(inputs) - names
        if missing or extra:
            raise EngineInputError(
                f"inputs must be exactly {sorted(names)}; missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        checked = {}
        for info in self.inputs:
            array = np.ascontiguousarray(inputs[info.name], dtype=info.dtype)
            if not info.accepts(array.shape):
                raise EngineInputError(
                    f"input {info.name!r} has shape {array.shape}; this engine takes {_shape_text(info.shape)}"
                )
            checked[info.name] = array
        return checked

    def describe(self) -> str:
        return f"{self.backend} on {self.device} ({self.precision})"

    def close(self) -> None:
        """Release device memory and runtime handles; the engine is unusable afterwards."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
