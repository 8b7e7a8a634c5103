"""Voice isolation of two real people side by side, end to end, judged against their own voices.

    python -m lab.real_faces.side_by_side                      # test identities (id05 × id14), 20 pairs
    python -m lab.real_faces.side_by_side --split validation   # the identities models are chosen on
    python -m lab.real_faces.side_by_side --weights out/real_faces/separator/av/best.pt   # a checkpoint, not the shipped ONNX
    git show 5bf4210:engines/weights/separator.pt > /tmp/first.pt && python -m lab.real_faces.side_by_side --weights /tmp/first.pt
                                                                 # the first separator (generated faces, legacy lip features)

Why this and not only `train_separator --evaluate`: that one feeds the separator lip embeddings cached
from each clip's own face track; a user's video goes through the live front end first. Here each pair of
clips (one of each held-out identity, both orders left/right) becomes one frame, ``HEIGHT`` px high, both
faces visible, the two clips' audio summed at equal active level (0 dB) — exact ground truth. The live path
runs offline, frame by frame and hop by hop (`lab.separation.separator_real_video.separate_video`: detector,
tracker, face mesh, lip encoder, streaming separator), and **each output is given to a person by where its
track's box is** (left or right half; a side's person is its longest track plus any track that never shares a
frame with it — a concurrent track is a person in the clip's background and is not scored, ``--all-tracks`` sums
it in as before session 15 — and a side with no track gets an output of silence) — never by the best
permutation. Score: SI-SDR improvement of each person's output over the mixture, against that person's own clip
audio. Second row (``--extra``): plus a LibriSpeech test-other talker off screen at −5 dB re. each person and
recorded noise (evaluation part) at 10 dB SNR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND
from lab.real_faces.face_tracks import SAMPLE_RATE, TEST_IDS, VALIDATION_IDS, VOXCELEB, decode, require_data

HEIGHT = 360  # px: a video-call tile; each VoxCeleb crop (face-centred) is scaled to it
PAIRS = 20
SEED = 3


def pairs_of(split: str, count: int = PAIRS, seed: int = SEED) -> list[tuple[Path, Path]]:
    a_id, b_id = TEST_IDS if split == "test" else VALIDATION_IDS
    a, b = sorted((VOXCELEB / a_id).glob("*.mp4")), sorted((VOXCELEB / b_id).glob("*.mp4"))
    chosen = np.random.default_rng(seed).permutation(len(a) * len(b))[:count]
    return [(a[c // len(b)], b[c % len(b)]) for c in chosen]


def side_by_side(left: list[np.ndarray], right: list[np.ndarray], height: int = HEIGHT) -> tuple[list[np.ndarray], int]:
    """Frames of the two clips scaled to ``height`` and put side by side (as long as the shorter); the
    x where the right one starts."""
    import cv2

    n = min(len(left), len(right))
    def fit(f):
        return cv2.resize(f, (int(round(f.shape[1] * height / f.shape[0])), height), interpolation=cv2.INTER_AREA)
    frames = [np.ascontiguousarray(np.hstack([fit(left[t]), fit(right[t])])) for t in range(n)]
    return frames, fit(left[0]).shape[1]


def by_side(voices: dict[int, np.ndarray], boxes: dict[int, np.ndarray], split_x: int, n: int,
            all_tracks: bool = False) -> tuple[np.ndarray, list[int]]:
    """(2, n) the left person's output and the right one's, and how many tracks each side left out. A track belongs
    to the side its median box centre is on. A side's person is its track seen in most frames, plus any track there
    that never shares a frame with it (the same person under a new id); a track on screen at the same time is
    someone else — a person in the clip's background: session 14 looked at every validation video with more than
    two tracks and found only those — and its output is not the person's (``all_tracks``: summed in anyway, as
    before session 15)."""
    out = np.zeros((2, n), np.float32)
    sides: list[list[int]] = [[], []]
    for t in voices:
        cx = np.nanmedian((boxes[t][:, 0] + boxes[t][:, 2]) / 2)
        if np.isfinite(cx):
            sides[int(cx >= split_x)].append(t)
    left_out = [0, 0]
    for side, tracks in enumerate(sides):
        seen = {t: np.isfinite(boxes[t][:, 0]) for t in tracks}
        main = max(tracks, key=lambda t: seen[t].sum(), default=None)
        for t in tracks:
            if all_tracks or t == main or not (seen[t] & seen[main]).any():
                out[side] += voices[t][:n]
            else:
                left_out[side] += 1
    return out, left_out


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref + 1e-12) * ref
    return float(10 * np.log10((target @ target + 1e-12) / ((est - target) @ (est - target) + 1e-12)))


def checkpoint_lip_dim(path: Path) -> int:
    from engines.separation.crn_model import load_checkpoint

    return load_checkpoint(path).config.lip_dim


def evaluate(split: str, pairs: int, weights: Path | None, extra: bool, seed: int = SEED,
             competition: float | None = None, blend: float = AUDIO_ONLY_BLEND, all_tracks: bool = False) -> dict:
    from engines.faces.mesh_lip_front_end import MeshLipFrontEnd
    from engines.loader import load
    from engines.separation.streaming_separator import FACE_COMPETITION, StreamingSeparator
    from engines.separation.two_voice_blend import TwoVoiceBlend
    from lab.real_faces.real_mixtures import FaceUnit, pair_mixture
    from lab.separation.separator_real_video import separate_video

    competition = FACE_COMPETITION if competition is None else competition
    # the engines are loaded once; each video gets a fresh engine state around them (`separator()`)
    audio_only = None if blend == 0 else load("separator_audio_only", "onnxruntime", threads=1)
    if weights is None:
        av = load("separator", "onnxruntime", threads=1)

        def wrap(**kw):
            return StreamingSeparator.from_engine(av, **kw)
    else:
        import torch

        from engines.separation.crn_model import load_checkpoint

        torch.set_num_threads(1)
        model = load_checkpoint(weights).model()

        def wrap(**kw):
            return StreamingSeparator.from_model(model, **kw)

    def separator():
        two_voices = None if audio_only is None else TwoVoiceBlend.from_engine(audio_only, blend)
        return wrap(competition=competition, two_voices=two_voices)

    rng = np.random.default_rng(11)
    talkers = noise = None
    if extra:
        from lab.corpus.noise import noise_clip
        from lab.corpus.speech import EVAL, _load_flac, speakers

        talkers = [_load_flac(f) for s in speakers(EVAL, include_espeak=False) for f in s.files[:2]]
        noise = (noise_clip, EVAL)
    legacy = weights is not None and checkpoint_lip_dim(weights) == 16
    if legacy:  # the first separator (generated faces) reads the hand-made 16 lip features
        from engines.faces.lip_features import LipFrontEnd
    front = MeshLipFrontEnd()
    rows = []
    for a, b in pairs_of(split, pairs, seed):
        fa, xa, fps_a = decode(a)
        fb, xb, fps_b = decode(b)
        for left, right, (xl, xr) in ((fa, fb, (xa, xb)), (fb, fa, (xb, xa))):
            frames, split_x = side_by_side(left, right)
            n = len(frames) * SAMPLE_RATE // 25
            units = (FaceUnit("", "", np.pad(xl, (0, max(0, n - len(xl))))[:n], np.zeros((0, 1))),
                     FaceUnit("", "", np.pad(xr, (0, max(0, n - len(xr))))[:n], np.zeros((0, 1))))
            other = np.resize(talkers[int(rng.integers(len(talkers)))], n) if extra else None
            nz = noise[0](noise[1], n, rng) if extra else None
            mix, refs = pair_mixture(units, other, nz, -5.0, 10.0)
            # a new video: new tracks and lip state, the loaded models kept
            fresh = LipFrontEnd() if legacy else MeshLipFrontEnd(detector=front.detector, mesh=front.mesh,
                                                                 encoder=front.encoder)
            voices, _, boxes = separate_video(frames, mix, separator(), fresh)
            outs, left_out = by_side(voices, boxes, split_x, n, all_tracks)
            for k, (src, ref) in enumerate(zip((a, b) if left is fa else (b, a), refs)):
                base = si_sdr(mix, ref)
                own, cross = si_sdr(outs[k], ref), si_sdr(outs[k], refs[1 - k])
                rows.append({"clip": f"{src.parent.name}/{src.stem}", "side": "left right".split()[k],
                             "tracks": len(voices), "tracks_not_scored": left_out[k], "mixture": round(base, 2),
                             "si_sdri": round(own - base, 2), "swapped": bool(cross > own)})
    imp = np.array([r["si_sdri"] for r in rows])
    return {"split": split, "pairs": pairs, "faces": len(rows), "extra": extra, "competition": competition, "blend": blend,
            "all_tracks": all_tracks, "tracks_not_scored": sum(r["tracks_not_scored"] for r in rows),
            "weights": str(weights) if weights else "engines/weights/separator.onnx",
            "si_sdri_mean": round(float(imp.mean()), 2), "si_sdri_median": round(float(np.median(imp)), 2),
            "share_ge_6db": round(float((imp >= 6).mean()), 3),
            "swap_rate": round(float(np.mean([r["swapped"] for r in rows])), 3),
            "mean_tracks_per_video": round(float(np.mean([r["tracks"] for r in rows])), 2), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.real_faces.side_by_side", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--pairs", type=int, default=PAIRS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--weights", type=Path, default=None, help="a separator checkpoint (.pt) instead of the shipped ONNX")
    p.add_argument("--extra", action="store_true", help="add an off-screen test-other talker (−5 dB) and noise (10 dB)")
    p.add_argument("--competition", type=float, default=None,
                   help="how hard the faces compete for each bin (default: the live engine's; 0: not at all)")
    p.add_argument("--blend", type=float, default=AUDIO_ONLY_BLEND,
                   help="two faces: the audio-only voices' share of their masks (the engine's; 0: the AV masks alone)")
    p.add_argument("--all-tracks", action="store_true",
                   help="score the sum of every track on a side, background people too (the rule before session 15)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    require_data()
    result = evaluate(args.split, args.pairs, args.weights, args.extra, args.seed, args.competition, args.blend,
                      args.all_tracks)
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
