"""TEST ONLY: a small seeded conv encoder standing in for "an encoder" in engine tests.

It is not a shipped model and has no trained weights. It has two outputs of different ranks so
that tests catch outputs bound to the wrong name or shape.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyConvTest(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 24)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.down(self.stem(image))
        embedding = self.head(feature_map.mean(dim=(2, 3)))
        return embedding, feature_map


def build() -> TinyConvTest:
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # the same weights in every process, so exported ONNX and torch agree
    model = TinyConvTest()
    torch.random.set_rng_state(generator_state)
    return model
