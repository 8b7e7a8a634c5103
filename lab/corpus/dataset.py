"""Streaming clips for training: an ``IterableDataset`` that generates on the fly in workers.

Each clip's seed is ``base_seed + index``, and worker ``w`` of ``W`` takes indices ``w, w+W, ...``,
so the stream is the same whatever the number of workers (only the interleaving differs), and
nothing is stored on disk. Training seeds stay below ``EVAL_SEED_BASE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from lab.corpus.clip import Clip
from lab.corpus.evalset import EVAL_SEED_BASE
from lab.corpus.generate import default_config, make_clip
from lab.corpus.speech import TRAIN


class ClipStream(IterableDataset):
    """Yield ``transform(clip)`` for clips ``base_seed .. base_seed + num_clips - 1`` (or forever)."""

    def __init__(self, kind: str, config: Any = None, base_seed: int = 0, num_clips: int | None = None,
                 transform: Callable[[Clip], Any] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.config = config or default_config(kind, TRAIN)
        if getattr(self.config, "split", TRAIN) == TRAIN and base_seed + (num_clips or 0) > EVAL_SEED_BASE:
            raise ValueError("training seeds must stay below EVAL_SEED_BASE")
        self.base_seed = base_seed
        self.num_clips = num_clips
        self.transform = transform or to_tensors

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        index = worker
        while self.num_clips is None or index < self.num_clips:
            yield self.transform(make_clip(self.kind, self.base_seed + index, self.config))
            index += workers


def to_tensors(clip: Clip) -> dict[str, Any]:
    """Default transform: frames (T,H,W,3) uint8, mixture (N,), sources (K,N), boxes (T,K,4)."""
    out: dict[str, Any] = {
        "frames": torch.from_numpy(clip.frames),
        "mixture": torch.from_numpy(clip.mixture),
        "sources": torch.from_numpy(clip.sources),
        "noise": torch.from_numpy(clip.noise),
        "boxes": torch.from_numpy(clip.boxes),
        "sounding": torch.from_numpy(clip.sounding),
        "seed": clip.meta.get("seed"),
    }
    if clip.masks is not None:
        out["masks"] = torch.from_numpy(clip.masks)
    return out
