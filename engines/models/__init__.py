"""Every model Earshot runs, by name: how to build it in PyTorch and what its tensors look like.

The registry is the single source for export (`lab.onnx_export`), for the engine layer
(`engines.loader.load(name)`) and for the benchmarks, so a model added here is exported, served
by every backend, parity-tested and benchmarked with no other edit. Adding a model is one
`register(ModelSpec(...))` entry below; the factory is named as ``"module:function"`` and imported
only when a torch module is actually needed, so loading the shipped ONNX never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

#: Shipped ONNX files and trained weights live here (and only real, shipped models do).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Default (min, opt, max) for an axis named "batch": streaming serves one item per call, but a
#: node may batch the faces of one frame, so engines are built to take up to 8.
DEFAULT_AXIS_RANGES: Mapping[str, tuple[int, int, int]] = {"batch": (1, 1, 8)}


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor of a model, with a concrete example shape used for export and tests."""

    name: str
    example_shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelSpec:
    """What the engine layer needs to know about a model.

    ``dynamic_axes`` maps a tensor name to {axis index: axis name} exactly as
    ``torch.onnx.export`` takes it; ``axis_ranges`` gives each named axis its (min, opt, max)
    for TensorRT optimisation profiles. ``shipped`` is False for test-only models: they are
    exported to a temporary cache on demand and never written to ``engines/weights``.
    """

    name: str
    factory: str | Callable[[], "torch.nn.Module"]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    axis_ranges: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: dict(DEFAULT_AXIS_RANGES))
    description: str = ""
    shipped: bool = True
    opset: int = 17
    #: FP32 export-vs-PyTorch max abs error allowed by `lab.onnx_export`
    atol: float = 1e-4

    @property
    def onnx_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.onnx"

    def exported_path(self, cache_dir: Path) -> Path:
        """Where this model's ONNX lives: shipped models in engines/weights, test-only ones in a cache."""
        return self.onnx_path if self.shipped else Path(cache_dir) / "onnx" / f"{self.name}.onnx"

    def onnx_file(self, cache_dir: Path) -> Path:
        """The ONNX file a backend reads. The runtime never exports (a deployment has no torch): a
        missing file is an error that names the lab command which writes it."""
        path = self.exported_path(cache_dir)
        if not path.exists():
            how = f"--model {self.name}" + ("" if self.shipped else f" --out {path.parent}")
            raise FileNotFoundError(f"{path} is missing: run `python launch.py export {how}` "
                                    "(needs the lab extra: pip install -e '.[lab]')")
        return path

    def build(self) -> "torch.nn.Module":
        """The torch module in eval mode, weights loaded by the factory."""
        factory = self.factory
        if isinstance(factory, str):
            module_name, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
        return factory().eval()

    def input_shape(self, spec: TensorSpec, **axes: int) -> tuple[int, ...]:
        """The example shape with named dynamic axes replaced, e.g. ``input_shape(s, batch=8)``."""
        shape = list(spec.example_shape)
        for index, axis in self.dynamic_axes.get(spec.name, {}).items():
            if axis in axes:
                shape[index] = axes[axis]
        return tuple(shape)

    def example_inputs(self, seed: int = 0, **axes: int) -> dict[str, np.ndarray]:
        """Random inputs of the example shapes (named axes overridable) for tests and benchmarks."""
        rng = np.random.default_rng(seed)
        return {
            s.name: rng.standard_normal(self.input_shape(s, **axes)).astype(s.dtype) for s in self.inputs
        }

    def profile_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) shape per input for a TensorRT optimisation profile."""
        shapes = {}
        for spec in self.inputs:
            axes = self.dynamic_axes.get(spec.name, {})
            missing = [a for a in axes.values() if a not in self.axis_ranges]
            if missing:
                raise ValueError(f"model {self.name!r}: dynamic axes {missing} of {spec.name!r} have no axis_ranges")
            shapes[spec.name] = tuple(
                self.input_shape(spec, **{a: self.axis_ranges[a][i] for a in axes.values()}) for i in range(3)
            )
        return shapes


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"no model named {name!r}; registered: {sorted(MODELS)}") from None


# ---------------------------------------------------------------------------------------------
# The registry. One entry per model. Shipped models first; test-only models last and marked so.
# ---------------------------------------------------------------------------------------------

# Sound source localization (issue 6): three graphs of one trained network, run by three nodes.
register(
    ModelSpec(
        name="localizer_visual",
        factory="engines.localization.shipped_localizer:visual",
        inputs=(TensorSpec("image", (1, 3, 224, 224)), TensorSpec("previous", (1, 3, 224, 224))),
        outputs=("features",),
        dynamic_axes={"image": {0: "batch"}, "previous": {0: "batch"}, "features": {0: "batch"}},
        description="Localization visual encoder: frame + previous frame (BGR 0..255) at 224² → 128×14×14 features "
        "(frozen CenterFace trunk + trained head).",
        atol=1e-3,  # inputs are 0..255 pixels: feature magnitudes are in the tens
    )
)
register(
    ModelSpec(
        name="localizer_audio",
        factory="engines.localization.shipped_localizer:audio",
        inputs=(TensorSpec("logmel", (1, 97, 80)),),
        outputs=("embedding",),
        dynamic_axes={"logmel": {0: "batch"}, "embedding": {0: "batch"}},
        description="Localization audio encoder: 1 s of 80-bin log-mel (97 frames) → 128-d embedding.",
        atol=1e-3,
    )
)
register(
    ModelSpec(
        name="localizer_fusion",
        factory="engines.localization.shipped_localizer:fusion",
        inputs=(TensorSpec("features", (1, 128, 14, 14)), TensorSpec("embedding", (1, 128))),
        outputs=("heatmap", "cosine"),
        dynamic_axes={"features": {0: "batch"}, "embedding": {0: "batch"}, "heatmap": {0: "batch"},
                      "cosine": {0: "batch"}},
        description="Localization attention: cosine of the audio embedding with each position → 14×14 map "
        "(heatmap: negatives clipped; cosine: unclipped, for scoring).",
    )
)

# Cocktail-party voice isolation (issues 5, 16): the causal AV separator and its audio-only baseline, both the
# frequency-aware CRN (`engines/separation/crn_model.py`). One streaming step: any number of STFT frames
# (``time``), faces as the batch, state in and out.
_SEPARATOR_TIME = {"time": (1, 1, 400)}
#: the state the shipped separators carry per face (1, batch, `CrnConfig.hidden`: each encoder layer's last input
#: frame and each time-GRU's hidden state, packed): must match engines/weights/separator*.pt. The input keeps the
#: name ``gru_state`` of the GRU network it replaced, so the engine and the nodes serve either.
_SEPARATOR_STATE = (1, 1, 8675)
register(
    ModelSpec(
        name="separator",
        factory="engines.separation.shipped_separator:av",
        inputs=(TensorSpec("mixture", (1, 4, 257, 2)), TensorSpec("lips", (1, 4, 64)),
                TensorSpec("vis_state", (1, 64, 16)), TensorSpec("gru_state", _SEPARATOR_STATE)),
        outputs=("mask", "vis_state_out", "gru_state_out"),
        dynamic_axes={"mixture": {0: "batch", 1: "time"}, "lips": {0: "batch", 1: "time"},
                      "vis_state": {0: "batch"}, "gru_state": {1: "batch"},
                      "mask": {0: "batch", 1: "time"}, "vis_state_out": {0: "batch"}, "gru_state_out": {1: "batch"}},
        axis_ranges={**DEFAULT_AXIS_RANGES, **_SEPARATOR_TIME},
        description="AV separator step: mixture STFT frames + one face's lip embeddings (lip_encoder, held at the STFT rate; + carried state) → "
        "that face's complex ratio mask. Faces are the batch.",
        atol=1e-3,
    )
)
register(
    ModelSpec(
        name="separator_audio_only",
        factory="engines.separation.shipped_separator:audio_only",
        inputs=(TensorSpec("mixture", (1, 4, 257, 2)), TensorSpec("gru_state", _SEPARATOR_STATE)),
        outputs=("mask", "gru_state_out"),
        dynamic_axes={"mixture": {0: "batch", 1: "time"}, "gru_state": {1: "batch"},
                      "mask": {0: "batch", 1: "time"}, "gru_state_out": {1: "batch"}},
        axis_ranges={**DEFAULT_AXIS_RANGES, **_SEPARATOR_TIME},
        description="Audio-only separator baseline (PIT): mixture STFT frames (+ state) → 2 complex ratio masks.",
        atol=1e-3,
    )
)

# The lip-sync pair (issue 16): per face, per video frame, a lip embedding; per video frame, an audio
# embedding in the same space. Their cosine says which face the voice belongs to (speaking face, issue 14)
# and the lip embedding is what the separator sees of a face.
_LIP_STATE = (1, 256, 4)  # (batch, 2 × frame_dim, kernel − 1) of engines/weights/lip_encoder.pt
register(
    ModelSpec(
        name="lip_encoder",
        factory="engines.faces.lip_encoder:shipped",
        inputs=(TensorSpec("crops", (1, 1, 32, 48)), TensorSpec("lips", (1, 1, 84)), TensorSpec("state", _LIP_STATE)),
        outputs=("embedding", "state_out"),
        dynamic_axes={"crops": {0: "batch", 1: "time"}, "lips": {0: "batch", 1: "time"}, "state": {0: "batch"},
                      "embedding": {0: "batch", 1: "time"}, "state_out": {0: "batch"}},
        axis_ranges={**DEFAULT_AXIS_RANGES, "time": (1, 1, 250)},
        description="Lip encoder step: grey 32×48 mouth crops (0..255) + 83-number mesh lip vector and presence "
        "(+ carried state) → 64-d embedding per frame. Faces are the batch.",
        atol=1e-3,
    )
)
register(
    ModelSpec(
        name="sync_audio",
        factory="engines.faces.sync_audio_encoder:shipped",
        inputs=(TensorSpec("logmel", (1, 140, 40)),),
        outputs=("embedding",),
        dynamic_axes={"logmel": {0: "batch", 1: "mel_frames"}, "embedding": {0: "batch", 1: "frames"}},
        axis_ranges={**DEFAULT_AXIS_RANGES, "mel_frames": (44, 140, 1040)},
        description="Lip-sync audio encoder: 40-band log10 mel (4 per video frame + 20 each side) → 64-d "
        "embedding per video frame, in the lip encoder's space.",
        atol=1e-3,
    )
)

register(
    ModelSpec(
        name="tiny_conv_test",
        factory="engines.models.tiny_conv_test:build",
        inputs=(TensorSpec("image", (1, 3, 64, 64)),),
        outputs=("embedding", "feature_map"),
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}, "feature_map": {0: "batch"}},
        description="TEST ONLY: a seeded two-conv encoder with no trained weights, so export, every backend and "
        "the benchmarks are tested without a trained model. Not a real model.",
        shipped=False,
    )
)
