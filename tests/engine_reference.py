"""PyTorch reference outputs of a registered model, shared by the engine parity tests."""

from __future__ import annotations

from engines.models import ModelSpec


def torch_reference(spec: ModelSpec, batches: tuple[int, ...] = (1, 8)) -> dict[int, tuple[dict, dict]]:
    """batch → (inputs, PyTorch outputs by name)."""
    import torch

    module = spec.build()
    out = {}
    for batch in batches:
        inputs = spec.example_inputs(seed=batch, batch=batch)
        with torch.inference_mode():
            result = module(*(torch.from_numpy(a) for a in inputs.values()))
        out[batch] = (inputs, {n: t.numpy() for n, t in zip(spec.outputs, result)})
    return out
