"""The Senocak et al. (CVPR 2018) localization network, sized for real time on 2 CPU cores.

Three parts, exported as three ONNX graphs so the live graph runs each where its input arrives:

* `VisualEncoder`: frame (and the frame before it) at 224² → (D, 14, 14) spatial features. The
  paper starts from an ImageNet-trained VGG-16; here the pretrained part is CenterFace's MobileNetV2
  body (`trunk.FaceTrunk`, frozen, trained on real photographs; ~4 ms per frame with ONNX Runtime
  on 2 cores, where ResNet-18 costs 23–29 ms), and only a small head on top of it is trained. A CNN
  trained from scratch on the generated scenes scored as well on them but found nothing on real
  footage. The head also sees the difference to the previous frame, because a still frame cannot
  tell a playing guitar from a silent one beside it.
* `AudioEncoder`: 1 s of log-mel (97 × 80, the live ``stft`` node's frames) → CNN → two FC layers
  → D-dim embedding, as in the paper's sound network.
* `Attention`: cosine of the audio embedding with every spatial position, negatives clipped to 0:
  that is the localization map (in [0, 1]). Normalised to sum to 1 it weights the visual features;
  the attended feature goes through two FC layers to f_v, which the metric-learning loss pulls
  towards its own clip's audio embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 128
#: nodes feed raw 0..255 BGR floats; the motion branch scales the frame difference inside the graph
PIXEL_STD = 64.0
#: the difference image is small; scale it to the range of the frame itself
MOTION_GAIN = 4.0
#: added to every cell of the map before it is normalised into pooling weights
WEIGHT_FLOOR = 1e-3


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2 if k % 2 else 0, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class VisualEncoder(nn.Module):
    """(B, 3, 224, 224) frame + previous frame, BGR 0..255 → (B, D, 14, 14) features.

    Frozen pretrained trunk (121 channels at stride 16), a motion branch on the frame difference,
    then one 3×3 conv (neighbouring cells: a face is several cells wide) and a 1×1 projection.
    Training passes the trunk's features precomputed (``trunk``): the trunk never changes, and
    running it is most of the cost of a step.
    """

    def __init__(self, dim: int = EMBED_DIM, motion_width: int = 32) -> None:
        super().__init__()
        from engines.localization.face_trunk import CHANNELS, FaceTrunk

        self.trunk = FaceTrunk()
        self.norm = nn.BatchNorm2d(CHANNELS)  # CenterFace's activations have no common scale
        m = motion_width
        self.motion = nn.Sequential(_conv(1, m // 2, stride=2), _conv(m // 2, m, stride=2))  # 56² → 14²
        self.mix = _conv(CHANNELS + m, dim)
        self.project = nn.Conv2d(dim, dim, 1)

    def forward(self, image: torch.Tensor, previous: torch.Tensor,
                trunk: torch.Tensor | None = None) -> torch.Tensor:
        if trunk is None:
            trunk = self.trunk(image)
        change = (image - previous).abs().mean(dim=1, keepdim=True) * (MOTION_GAIN / PIXEL_STD)
        motion = self.motion(F.avg_pool2d(change, 4))
        return self.project(self.mix(torch.cat([self.norm(trunk), motion], dim=1)))


class AudioEncoder(nn.Module):
    """(B, 97, 80) natural-log mel power → (B, D) embedding (CNN, then two FC layers)."""

    def __init__(self, dim: int = EMBED_DIM, width: int = 16) -> None:
        super().__init__()
        w = width
        self.norm = nn.BatchNorm2d(1)  # learns the log-mel level and spread: no hand-set constants
        self.body = nn.Sequential(  # strided from the first layer: full-resolution convs cost the most
            _conv(1, w, stride=2),                # 49 × 40 (time × mel)
            _conv(w, 2 * w, stride=2),            # 25 × 20
            _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, stride=2),        # 13 × 10
            _conv(4 * w, 4 * w),
        )
        self.fc = nn.Sequential(nn.Linear(8 * w, 2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.body(self.norm(logmel.unsqueeze(1)))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # mean: steady, max: events
        return self.fc(pooled)


def attention_map(features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Cosine of ``embedding`` (B, D) with each position of ``features`` (B, D, H, W) → (B, H, W)."""
    v = F.normalize(features, dim=1)
    a = F.normalize(embedding, dim=1)
    return torch.einsum("bdhw,bd->bhw", v, a)


class Attention(nn.Module):
    """Localization map and attended visual feature f_v (the paper's fusion)."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        cosine = attention_map(features, embedding)
        heatmap = cosine.clamp(min=0.0)  # negatives clipped: "not here" is zero, not negative evidence
        # a tiny uniform floor: a map with no positive cell (early in training) pools evenly
        # instead of to zero, so f_v and the metric-learning loss still see the frame
        floored = heatmap + WEIGHT_FLOOR
        weights = floored / floored.sum(dim=(1, 2), keepdim=True)
        attended = torch.einsum("bdhw,bhw->bd", features, weights)
        return {"cosine": cosine, "heatmap": heatmap, "weights": weights, "f_v": self.fc(attended)}


class Localizer(nn.Module):
    """The whole network, for training and evaluation in PyTorch."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.visual = VisualEncoder(dim)
        self.audio = AudioEncoder(dim)
        self.attention = Attention(dim)

    def forward(self, image: torch.Tensor, previous: torch.Tensor, logmel: torch.Tensor,
                trunk: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.visual(image, previous, trunk)
        embedding = self.audio(logmel)
        out = self.attention(features, embedding)
        out.update(features=features, embedding=embedding)
        return out


# -- the exported pieces: what the three live nodes run ----------------------------------------


class FusionGraph(nn.Module):
    """The fusion node's graph: feature map + embedding → heatmap (B, 14, 14) in [0, 1], and the
    unclipped cosine map that evaluation scores."""

    def __init__(self, attention: Attention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, features: torch.Tensor, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cosine = attention_map(features, embedding)
        return cosine.clamp(min=0.0), cosine


#: state-dict prefix of the frozen trunk: not saved with the trained weights, rebuilt from CenterFace
TRUNK_PREFIX = "visual.trunk."


@dataclass(frozen=True)
class Checkpoint:
    """What a saved localizer holds: weights, the mode it was trained in, and its training log.

    The frozen trunk is left out (it is CenterFace's, shipped in engines/faces) so the file holds
    only what training changed, and no float16 rounding separates the trunk from the live graph.
    """

    state: dict
    mode: str
    history: dict

    def save(self, path) -> None:
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.state.items()
                 if not k.startswith(TRUNK_PREFIX)}
        torch.save({"state": state, "mode": self.mode, "history": self.history}, path)

    @staticmethod
    def load(path) -> "Checkpoint":
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v.float() if v.is_floating_point() else v for k, v in raw["state"].items()}
        return Checkpoint(state, raw.get("mode", "?"), raw.get("history", {}))

    def model(self) -> Localizer:
        model = Localizer()
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        wrong = [k for k in missing if not k.startswith(TRUNK_PREFIX)] + list(unexpected)
        if wrong:
            raise ValueError(f"checkpoint does not fit the localizer (old architecture?): {wrong[:5]} ...")
        return model.eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
