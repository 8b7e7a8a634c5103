"""The shipped separator weights and the graphs the model registry exports from them.

`launch.py export --model separator --model separator_audio_only` writes
``engines/weights/separator*.onnx`` from ``engines/weights/separator*.pt`` (CRNs since session 11, trained
as the model card says); the live node loads the ONNX through `engines.loader.load`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.models import WEIGHTS_DIR
from engines.separation import crn_model
from engines.separation.separator_model import Checkpoint

AV_WEIGHTS = WEIGHTS_DIR / "separator.pt"
AUDIO_ONLY_WEIGHTS = WEIGHTS_DIR / "separator_audio_only.pt"

#: tensor names of the streaming step (shared by export, the ONNX engine and the torch path)
AV_INPUTS = ("mixture", "lips", "vis_state", "gru_state")
AV_OUTPUTS = ("mask", "vis_state_out", "gru_state_out")
AUDIO_ONLY_INPUTS = ("mixture", "gru_state")
AUDIO_ONLY_OUTPUTS = ("mask", "gru_state_out")


def load_checkpoint(path: Path) -> Checkpoint | crn_model.CrnCheckpoint:
    """Either network's weights file (the GRU network or the CRN: the file says which)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: train it as engines/separation/MODEL_CARD.md says (its first "
                                "section: `python -m lab.real_faces.train_separator --arch crn`, then `--calibrate`)")
    return crn_model.load_checkpoint(path)


class AudioOnlyStep(nn.Module):
    """The audio-only network without its unused lip inputs (ONNX drops unused inputs anyway)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mixture: torch.Tensor, gru_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = mixture.shape[:2]
        vis, _ = self.model.initial_state(b)
        mask, _, gru_state = self.model(mixture, mixture.new_zeros(b, t, 0), vis, gru_state)
        return mask, gru_state


def av() -> nn.Module:
    """mixture (B, T, 257, 2), lips (B, T, 64), vis_state (B, 64, 16), gru_state (1, B, state) →
    mask (B, T, 1, 257, 2), vis_state_out, gru_state_out."""
    return load_checkpoint(AV_WEIGHTS).model()


def audio_only() -> nn.Module:
    """mixture (B, T, 257, 2), gru_state (1, B, state) → mask (B, T, 2, 257, 2), gru_state_out."""
    return AudioOnlyStep(load_checkpoint(AUDIO_ONLY_WEIGHTS).model())
