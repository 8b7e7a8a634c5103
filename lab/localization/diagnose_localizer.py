"""Why the localizer misses on the restaurant clip: the same frames with one input taken away.

    python -m lab.localization.diagnose_localizer                    # shipped supervised weights
    python -m lab.localization.diagnose_localizer --weights FOLDER   # a training run's

Each row is the share of speech frames (``real_video``'s energy detector) whose heatmap peak lies
inside CenterFace's face box, as `eval-localizer --real-video` counts it:

* as trained: the map the live graph draws;
* no motion: the previous frame replaced by the frame itself (the motion branch sees nothing);
* silenced: the audio scaled by 1e-3 (what the map looks like when nothing is heard);
* face channel alone: the frozen trunk's own face heatmap (CenterFace, trained on real photos), no
  trained layer and no audio: does the trunk find the face at 224²?
* AV synchrony: the training-free baseline of the ``loc2`` table (motion energy per region
  correlated with the audio envelope over the last second);
* + β·face: the trained cosine map plus β times that face channel, with the held-out ``loc2``
  scores beside it. This is a post-hoc probe read on the test clip, not a model: choosing β here
  would be tuning on the test clip.

Needs ../shared/data/video and the held-out cache (`eval-localizer` builds it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

BETAS = (0.1, 0.2, 0.3, 0.5, 1.0)


def peak_on_face(maps: np.ndarray, boxes: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    from lab.localization.localizer_real_video import inside, peak_xy

    return np.asarray([any(inside(peak_xy(heat, *size), b) for b in frame_boxes)
                       for heat, frame_boxes in zip(maps, boxes)])


def restaurant_maps(model) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray], tuple[int, int]]:
    """Cosine maps of every frame under each ablation, the trunk's face channel, and the frames' facts."""
    import torch

    from lab.corpus.audio import SAMPLE_RATE_HZ
    from lab.corpus.data_paths import require_data
    from lab.localization.localization_baselines import synchrony_map
    from engines.localization.localizer_inputs import resize_frame, window_logmel
    from lab.localization.localization_samples import audio_envelope, grey_history
    from lab.localization.localizer_real_video import RESTAURANT, decode, faces, speech_frames

    video = decode(require_data("video") / RESTAURANT)
    ends = np.round((video.times_s + 1 / video.fps) * SAMPLE_RATE_HZ).astype(int)
    maps: dict[str, list[np.ndarray]] = {"as trained": [], "no motion": [], "silenced": [], "face channel": [],
                                         "AV synchrony": []}
    previous = None
    with torch.inference_mode():
        for t, (frame, end) in enumerate(zip(video.frames, ends)):
            image = torch.from_numpy(resize_frame(frame).transpose(2, 0, 1)[None].astype(np.float32))
            prev = image if previous is None else previous
            previous = image
            trunk = model.visual.trunk(image)
            logmel = torch.from_numpy(window_logmel(video.audio[:end])[None])
            quiet = torch.from_numpy(window_logmel(video.audio[:end] * 1e-3)[None])
            maps["as trained"].append(model(image, prev, logmel, trunk)["cosine"][0].numpy())
            maps["no motion"].append(model(image, image, logmel, trunk)["cosine"][0].numpy())
            maps["silenced"].append(model(image, prev, quiet, trunk)["cosine"][0].numpy())
            maps["face channel"].append(trunk[0, -1].numpy())
            maps["AV synchrony"].append(synchrony_map(grey_history(video.frames, t), audio_envelope(video.audio, end)))
    h, w = video.frames[0].shape[:2]
    return {k: np.stack(v) for k, v in maps.items()}, speech_frames(video.audio, ends), faces(video), (w, h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.localization.diagnose_localizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="folder with localizer_supervised.pt (default: shipped)")
    args = p.parse_args(argv)
    import torch

    from lab.corpus.data_paths import DataMissingError
    from lab.localization.localization_samples import load_or_build
    from lab.localization.localization_metrics import Scores
    from engines.localization.localizer_model import Checkpoint
    from engines.localization.shipped_localizer import weights_path
    from lab.localization.train_localizer import WEIGHTS, heatmaps

    torch.set_num_threads(2)
    model = Checkpoint.load(weights_path("supervised", args.weights or WEIGHTS)).model()
    try:
        maps, speech, boxes, size = restaurant_maps(model)
        held_out = load_or_build("eval")
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"restaurant clip, {int(speech.sum())} speech frames: heatmap peak inside the face box")
    print("| map | restaurant | loc2 cIoU@0.5 / AUC / pointing |")
    print("|---|---|---|")
    cosine = heatmaps(model, held_out)
    face = held_out.trunk[:, -1].astype(np.float32)
    held_out_maps = {"as trained": cosine, "face channel": face,
                     "no motion": heatmaps(model, replace(held_out, previous=held_out.image))}
    for name, m in maps.items():
        loc2 = Scores.of(held_out_maps[name], held_out.gt) if name in held_out_maps else None
        extra = f"{loc2.ciou05:.3f} / {loc2.auc:.3f} / {loc2.pointing:.3f}" if loc2 else ""
        print(f"| {name} | {peak_on_face(m, boxes, size)[speech].mean():.1%} | {extra} |")
    for beta in BETAS:
        loc2 = Scores.of(cosine + beta * face, held_out.gt)
        hits = peak_on_face(maps["as trained"] + beta * maps["face channel"], boxes, size)
        print(f"| as trained + {beta}·face channel (probe, not a model) | {hits[speech].mean():.1%} | "
              f"{loc2.ciou05:.3f} / {loc2.auc:.3f} / {loc2.pointing:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
