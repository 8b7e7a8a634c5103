"""Which trained localizer is shipped, and the three graphs the model registry exports from it.

The shipped model is the mode that scored best on the *validation* scenes of the training split
(never the held-out set): the supervised one in the current run (validation cIoU@0.5 0.703 vs
0.701 for semi-supervised with λ = 10, see MODEL_CARD.md).
The registry (`engines.models`) names these factories; `launch.py export` writes
engines/weights/localizer_{visual,audio,fusion}.onnx, which the live nodes load through
`engines.loader.load`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from engines.localization.localizer_model import FusionGraph, Localizer
from engines.models import WEIGHTS_DIR

SHIPPED_MODE = "supervised"


def weights_path(mode: str, folder: Path = WEIGHTS_DIR) -> Path:
    """Where the checkpoint of a training mode lives (`launch.py train-localizer` writes it)."""
    return folder / f"localizer_{mode}.pt"


def shipped_model(path: Path | None = None) -> Localizer:
    from engines.localization.localizer_model import Checkpoint

    path = path or weights_path(SHIPPED_MODE)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it with `python launch.py train-localizer`")
    return Checkpoint.load(path).model()


def visual() -> nn.Module:
    """(1, 3, 224, 224) image, previous (BGR 0..255 floats) → (1, 128, 14, 14) features."""
    return shipped_model().visual


def audio() -> nn.Module:
    """(1, 97, 80) log-mel → (1, 128) embedding."""
    return shipped_model().audio


def fusion() -> nn.Module:
    """(1, 128, 14, 14) features + (1, 128) embedding → (1, 14, 14) heatmap in [0, 1]."""
    return FusionGraph(shipped_model().attention)
