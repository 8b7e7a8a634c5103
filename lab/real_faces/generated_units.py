"""Generated talking faces as face units, for the share of separator training that keeps drawn faces working.

    python -m lab.real_faces.generated_units --clips 160        # training seeds → out/real_faces/generated/train.npz
    python -m lab.real_faces.generated_units --clips 16 --split eval   # a held-out check set (eval seeds)

Why: the separator now reads faces through the real-face front end (face mesh → lip encoder, learned on
real VoxCeleb mouths). The shipped demo clip (`demo/demo.mp4`) and the synthetic corpus draw their faces; a
model trained on real faces alone hears no cue in a drawn mouth (−0.2 dB on the demo). A share of generated
units in training (`train_separator --generated`) teaches it both, and the real-face validation says whether
that costs anything on real faces. Each unit: one face of a one-speaker generated clip (the corpus at 640×360,
no noise), its clean speech, and its lip embedding per frame from the live front end
(`engines.faces.mesh_lip_front_end`) — zeros where no face was tracked, as the live node sends nothing then.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lab.real_faces.face_tracks import REPO

OUT = REPO / "out" / "real_faces" / "generated"
SECONDS = 4.0
#: the generated seeds of the lone-voice check (`lab.real_faces.lone_voice`, and the CI test's clip, seed 7):
#: separator training leaves them out of these units
DRAWN_SEEDS = tuple(range(7, 12))


def unit_of(clip, front) -> tuple[np.ndarray, np.ndarray, float]:
    """(audio (N,), emb (T, 64), share of frames with the face tracked) of a one-face clip."""
    emb = np.zeros((clip.num_frames, 64), np.float32)
    found = 0
    for t, frame in enumerate(clip.frames):
        r = front.process(frame)
        if len(r.track_ids):
            k = int(np.argmax((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])))
            emb[t] = r.lip_features[k]
            found += 1
    return clip.sources[0].astype(np.float32), emb, found / clip.num_frames


def build(clips: int, split: str, base_seed: int = 0) -> Path:
    from engines.faces.mesh_lip_front_end import MeshLipFrontEnd
    from lab.corpus.generate import default_config, make_clip
    from lab.corpus.evalset import EVAL_SEED_BASE

    from tqdm import tqdm

    cfg = replace(default_config("separation", split), num_speakers=(1,), noise_prob=0.0, duration_s=SECONDS,
                  width=640, height=360)
    first = base_seed + (EVAL_SEED_BASE if split == "eval" else 0)
    front = MeshLipFrontEnd()
    audio, emb, found = [], [], []
    t0 = time.monotonic()
    for seed in tqdm(range(first, first + clips), desc=f"generated units ({split})"):
        fresh = MeshLipFrontEnd(detector=front.detector, mesh=front.mesh, encoder=front.encoder)
        a, e, f = unit_of(make_clip("separation", seed, cfg), fresh)
        audio.append(a), emb.append(e), found.append(f)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{split}.npz"
    np.savez_compressed(path, audio=np.stack(audio), emb=np.stack(emb), found=np.array(found, np.float32),
                        seeds=np.arange(first, first + clips))
    print(f"{path}: {clips} units, face tracked in {np.mean(found):.1%} of frames, {time.monotonic() - t0:.0f} s")
    return path


def load_units(path: Path):
    """The units as `FaceUnit`s, each its own identity (two may share a mixture, as the demo's faces do)."""
    from lab.real_faces.real_mixtures import FaceUnit

    z = np.load(path)
    return [FaceUnit(f"generated{int(s)}", f"seed{int(s)}", a, e) for a, e, s in zip(z["audio"], z["emb"], z["seeds"])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.real_faces.generated_units", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=160)
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument("--base-seed", type=int, default=0)
    args = p.parse_args(argv)
    build(args.clips, args.split, args.base_seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
