"""Does the localizer compute the same heatmaps on a GPU as on the CPU, on real frames?

    python benchmarks/localizer_parity.py --save out/parity/restaurant.npz     # here: cut the inputs
    python benchmarks/localizer_parity.py --inputs out/parity/restaurant.npz   # on the GPU machine

`benchmarks/engines.py` times random tensors; a GPU figure is only worth quoting if FP16 and CUDA
graphs leave the *maps* intact on real footage. ``--save`` cuts ``--frames`` evenly spaced frames of
a real clip (default: the restaurant clip in ../shared/data/video) into what the live nodes feed the
three graphs (frame and previous frame at 224², the last second of log-mel), as uint8 images, so the
file can travel to a machine without the shared data or PyAV. ``--inputs`` runs every variant
usable there and compares it with ONNX Runtime FP32 on the CPU on the same inputs: the largest
feature and map differences, and in how many frames the map's peak cell is the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.loader import load  # noqa: E402

PARTS = ("visual", "audio", "fusion")
#: variant → load() options; the torch CUDA ones are skipped where CUDA is missing
VARIANTS = {
    "onnxruntime-cpu": ("onnxruntime", {"device": "cpu"}),
    "torch-fp32-cpu": ("torch", {"device": "cpu", "fp16": False, "cuda_graph": False}),
    "torch-fp32-cuda": ("torch", {"device": "cuda", "fp16": False, "cuda_graph": False}),
    "torch-fp16-cuda": ("torch", {"device": "cuda", "fp16": True, "cuda_graph": False}),
    "torch-fp16-cuda-graph": ("torch", {"device": "cuda", "fp16": True, "cuda_graph": True}),
}


def save_inputs(video_path: Path, frames: int, out: Path) -> None:
    from lab.corpus.audio import SAMPLE_RATE_HZ
    from engines.localization.localizer_inputs import resize_frame, window_logmel
    from lab.localization.localizer_real_video import decode

    video = decode(video_path)
    picks = np.linspace(1, len(video.frames) - 1, frames).round().astype(int)
    image = np.stack([resize_frame(video.frames[i]) for i in picks])
    previous = np.stack([resize_frame(video.frames[i - 1]) for i in picks])
    ends = np.round((video.times_s[picks] + 1 / video.fps) * SAMPLE_RATE_HZ).astype(int)
    logmel = np.stack([window_logmel(video.audio[:e]) for e in ends])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, image=image, previous=previous, logmel=logmel, source=video_path.name)
    print(f"{len(picks)} frames of {video_path.name} → {out} ({out.stat().st_size / 1e6:.1f} MB)")


def run_variant(backend: str, options: dict, inputs) -> tuple[np.ndarray, np.ndarray]:
    """(features, cosine maps) of every frame, one frame per call as the live nodes run."""
    graphs = {p: load(f"localizer_{p}", backend=backend, **options) for p in PARTS}
    chw = lambda a: a.transpose(2, 0, 1)[None].astype(np.float32)  # noqa: E731
    features, maps = [], []
    try:
        for image, previous, logmel in zip(inputs["image"], inputs["previous"], inputs["logmel"]):
            f = graphs["visual"].run({"image": chw(image), "previous": chw(previous)})["features"]
            e = graphs["audio"].run({"logmel": logmel[None]})["embedding"]
            features.append(f[0].astype(np.float32))
            maps.append(graphs["fusion"].run({"features": f, "embedding": e})["cosine"][0].astype(np.float32))
    finally:
        for g in graphs.values():
            g.close()
    return np.stack(features), np.stack(maps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--save", type=Path, help="cut real inputs into this .npz (needs PyAV and ../shared/data)")
    p.add_argument("--video", type=Path, default=None, help="clip to cut (default: the restaurant clip)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--inputs", type=Path, help="an .npz written by --save: compare the variants on it")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args(argv)
    if args.save:
        from lab.corpus.data_paths import require_data
        from lab.localization.localizer_real_video import RESTAURANT

        save_inputs(args.video or require_data("video") / RESTAURANT, args.frames, args.save)
        return 0
    if not args.inputs:
        p.error("give --save FILE or --inputs FILE")
    inputs = np.load(args.inputs)
    print(f"{len(inputs['image'])} real frames of {inputs['source']}; reference: onnxruntime-cpu (FP32)")
    ref_f, ref_m = run_variant(*VARIANTS["onnxruntime-cpu"], inputs)
    print("| variant | max abs diff, features (rel) | max abs diff, cosine map | same peak cell |")
    print("|---|---|---|---|")
    for name in args.variants:
        if name == "onnxruntime-cpu":
            continue
        try:
            f, m = run_variant(*VARIANTS[name], inputs)
        except Exception as exc:  # e.g. no CUDA here: the other rows still count
            print(f"| {name} | cannot run: {type(exc).__name__}: {str(exc).splitlines()[0][:150]} | | |")
            continue
        df = float(np.abs(f - ref_f).max())
        same = np.mean(m.reshape(len(m), -1).argmax(1) == ref_m.reshape(len(m), -1).argmax(1))
        print(f"| {name} | {df:.1e} ({df / float(np.abs(ref_f).max()):.1e}) | "
              f"{float(np.abs(m - ref_m).max()):.1e} | {same:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
