"""The localizer's pretrained visual trunk: CenterFace's MobileNetV2 body, frozen, as a torch module.

Why: a CNN trained from scratch on generated scenes learns what the generator draws, and on real
footage its map lit up brick walls and tables, never the speaker (MODEL_CARD.md). Senocak et al.
start from an ImageNet-trained VGG; no such weights can be downloaded here, but the repo already
ships a network trained on real photographs of people: CenterFace (WIDER FACE). Its stride-16
features (96 channels), its top-down FPN level at the same stride (24, with stride-32 context) and
its face heatmap (max-pooled to the grid) give the trainable head 121 channels that mean the same
on a webcam frame as on a training scene.

The four op types on that path (Conv, ConvTranspose, BatchNormalization, Relu, plus Add and
Sigmoid) are rebuilt from the ONNX file's own weights, in the file's node order; the first
convolution's input channels are reversed so the trunk takes BGR like every other visual input.
A converter library would do the same for many more ops than these, and would have to travel to
every GPU image; `tests/test_localization.py` checks this module against ONNX Runtime on the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: CenterFace tensors the trunk returns: stride-16 backbone block, stride-16 FPN level, face heatmap
BACKBONE, FPN, FACE_HEATMAP = "474", "518", "537"
CHANNELS = 96 + 24 + 1
#: the heatmap is at stride 4; the localizer's grid is stride 16
HEATMAP_POOL = 4


def _default_path() -> Path:
    from engines.faces.detector import MODEL_PATH

    return Path(MODEL_PATH)


class FaceTrunk(nn.Module):
    """(B, 3, H, W) BGR 0..255 → (B, 121, H/16, W/16) features; frozen, always in eval mode."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path or _default_path())).graph
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output}
        needed: set[str] = set()
        stack = [BACKBONE, FPN, FACE_HEATMAP]
        while stack:  # the nodes these three outputs depend on, nothing more
            name = stack.pop()
            if name in producers and name not in needed:
                needed.add(name)
                stack.extend(producers[name].input)
        self.input_name = graph.input[0].name
        self.layers = nn.ModuleDict()
        self.steps: list[tuple[str, list[str], str]] = []  # (op, inputs, output)
        first_conv = True
        for node in graph.node:
            if node.output[0] not in needed:
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            data_inputs = [name for name in node.input if name not in weights]
            if node.op_type in ("Conv", "ConvTranspose"):
                w = weights[node.input[1]]
                if first_conv and node.op_type == "Conv":
                    w, first_conv = w.flip(1), False  # RGB-trained: take BGR by reversing input channels
                self.layers[f"n{node.output[0]}"] = _conv(node.op_type, w, weights.get(node.input[2]) if len(node.input) > 2 else None, attrs)
            elif node.op_type == "BatchNormalization":
                scale, bias, mean, var = (weights[n] for n in node.input[1:5])
                bn = nn.BatchNorm2d(len(scale), eps=attrs.get("epsilon", 1e-5))
                bn.weight.data, bn.bias.data = scale.float(), bias.float()
                bn.running_mean.data, bn.running_var.data = mean.float(), var.float()
                self.layers[f"n{node.output[0]}"] = bn
            elif node.op_type not in ("Relu", "Add", "Sigmoid"):
                raise ValueError(f"CenterFace trunk: op {node.op_type} ({node.name}) is not supported")
            self.steps.append((node.op_type, data_inputs, node.output[0]))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FaceTrunk":
        return super().train(False)  # frozen: its batch norms keep CenterFace's statistics

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: bgr}
        for op, inputs, out in self.steps:
            if op == "Relu":
                values[out] = F.relu(values[inputs[0]])
            elif op == "Add":
                values[out] = values[inputs[0]] + values[inputs[1]]
            elif op == "Sigmoid":
                values[out] = torch.sigmoid(values[inputs[0]])
            else:
                values[out] = self.layers[f"n{out}"](values[inputs[0]])
        heat = F.max_pool2d(values[FACE_HEATMAP], HEATMAP_POOL)
        return torch.cat([values[BACKBONE], values[FPN], heat], dim=1)


def _conv(op: str, w: torch.Tensor, b: torch.Tensor | None, attrs: dict) -> nn.Module:
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise ValueError(f"asymmetric padding {pads} is not supported")
    common = dict(kernel_size=tuple(w.shape[2:]), stride=tuple(attrs.get("strides", [1, 1])),
                  padding=tuple(pads[:2]), dilation=tuple(attrs.get("dilations", [1, 1])),
                  groups=attrs.get("group", 1), bias=b is not None)
    if op == "Conv":
        layer = nn.Conv2d(w.shape[1] * common["groups"], w.shape[0], **common)
    else:
        layer = nn.ConvTranspose2d(w.shape[0], w.shape[1] * common["groups"],
                                   output_padding=tuple(attrs.get("output_padding", [0, 0])), **common)
    layer.weight.data = w.float().contiguous()
    if b is not None:
        layer.bias.data = b.float()
    return layer
