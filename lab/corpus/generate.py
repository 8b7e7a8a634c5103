"""One entry point for "clip number ``seed`` of kind X": what the dataset, CLI and eval sets call."""

from __future__ import annotations

from dataclasses import replace

from lab.corpus.clip import Clip
from lab.corpus.localization_scenes import LocalizationConfig, make_localization_clip
from lab.corpus.separation_scenes import SeparationConfig, make_separation_clip
from lab.corpus.speech import TRAIN

KINDS = ("separation", "localization")


def default_config(kind: str, split: str = TRAIN, **overrides) -> SeparationConfig | LocalizationConfig:
    if kind == "separation":
        return replace(SeparationConfig(split=split), **overrides)
    if kind == "localization":
        return replace(LocalizationConfig(split=split), **overrides)
    raise ValueError(f"unknown clip kind {kind!r}; expected one of {KINDS}")


def make_clip(kind: str, seed: int, config: SeparationConfig | LocalizationConfig | None = None) -> Clip:
    config = config or default_config(kind)
    if kind == "separation":
        return make_separation_clip(seed, config)  # type: ignore[arg-type]
    if kind == "localization":
        return make_localization_clip(seed, config)  # type: ignore[arg-type]
    raise ValueError(f"unknown clip kind {kind!r}; expected one of {KINDS}")
