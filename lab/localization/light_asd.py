"""Light-ASD (Liao et al., CVPR 2023) as a reference for "who is speaking" on real faces (issues 14, 16).

    python -m lab.localization.light_asd --sync --split validation      # own vs other/shifted audio, 1 s windows
    python -m lab.localization.light_asd --composites --split test      # issue 14's two-person windows

Why: the project's own lip-sync pair was learned from 40 minutes of 12 people and tells a face's own
voice at 80 % (1 s, test identities); the two-person localization rests on it (74 %, goal 80 %). Light-ASD
was trained on AVA-ActiveSpeaker (~38 h, thousands of faces; 94.1 % mAP there). Run on the same windows it
says how much of our gap is the model and how much the windows themselves (quiet stretches, off-screen
noise): the ceiling a teacher could give, and whether distilling it is worth a session.

Its weights are read from ``../shared/models/light-asd/`` (MIT) and never shipped; nothing live imports this
module. The network is written here from the paper and the tensor names of the state dict: per frame a
grey 112×112 face crop through three blocks of (spatial k×k conv → temporal k conv) for k = 3 and 5 summed,
1×1×1 conv, BatchNorm (ε 1e-3) and ReLU each, the first strided, max-pooled between blocks, global max pool
→ 128; 13 MFCCs at 100 Hz through the same kind of blocks along (cepstrum, time), pooled in time to 25 Hz,
mean over cepstra → 128; the two summed, a forward GRU then a backward GRU (GELU after each) → a linear
speaking / not-speaking logit per frame. Not causal (the backward GRU): a reference, not a live model.
Preprocessing as the authors' evaluation: the face box smoothed (median of 13 frames), a square crop 2.8×
the half-size around it (grey 110 outside the frame) resized to 224 and its centre 112×112 kept; MFCC by
`python_speech_features` on 16-bit-scaled samples (25 ms windows, 10 ms hop).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lab.corpus.data_paths import data_root

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "out" / "localization" / "light_asd"
WEIGHTS = "pretrain_AVA_CVPR.model"  # the TalkSet fine-tune barely hears: silence scores as high as speech
WEIGHT_FILES = (WEIGHTS, "finetuning_TalkSet.model")
CROP_SCALE = 0.4
CROP_SIZE = 224
MEAN, STD = 0.4161, 0.1688  # grey level statistics the visual encoder was trained with


def weights_path(name: str = WEIGHTS) -> Path:
    path = data_root().parent / "models" / "light-asd" / name
    if not path.exists():
        raise SystemExit(f"error: {path} is missing (Light-ASD weights live in ../shared/models, see its README)")
    return path


def _bn(channels: int, dims: int) -> nn.Module:
    return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels, eps=1e-3)


class TwoPathBlock(nn.Module):
    """Two factorised paths, k = 3 and k = 5, summed and mixed by a 1×1 conv: first a conv over the frame
    (``dims`` 3: k×k over the face image, ``first`` = "s"; ``dims`` 2: k×1 over the cepstra, ``first`` = "m"),
    then a k-tap conv over time. The layer names are the weights file's."""

    def __init__(self, cin: int, cout: int, dims: int, first: str, stride: int = 1) -> None:
        super().__init__()
        self.first = first
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        for k in (3, 5):
            p = k // 2
            if dims == 3:
                over_frame = conv(cin, cout, (1, k, k), (1, stride, stride), (0, p, p), bias=False)
                over_time = conv(cout, cout, (k, 1, 1), 1, (p, 0, 0), bias=False)
            else:
                over_frame = conv(cin, cout, (k, 1), padding=(p, 0), bias=False)
                over_time = conv(cout, cout, (1, k), padding=(0, p), bias=False)
            setattr(self, f"{first}_{k}", over_frame)
            setattr(self, f"bn_{first}_{k}", _bn(cout, dims))
            setattr(self, f"t_{k}", over_time)
            setattr(self, f"bn_t_{k}", _bn(cout, dims))
        self.last = conv(cout, cout, 1, bias=False)
        self.bn_last = _bn(cout, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = []
        for k in (3, 5):
            f = self.first
            y = torch.relu(getattr(self, f"bn_{f}_{k}")(getattr(self, f"{f}_{k}")(x)))
            paths.append(torch.relu(getattr(self, f"bn_t_{k}")(getattr(self, f"t_{k}")(y))))
        return torch.relu(self.bn_last(self.last(paths[0] + paths[1])))


class VisualEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1, self.block2, self.block3 = (TwoPathBlock(1, 32, 3, "s", stride=2), TwoPathBlock(32, 64, 3, "s"),
                                                 TwoPathBlock(64, 128, 3, "s"))
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) uint8-range grey → (B, T, 128)."""
        x = ((faces / 255.0 - MEAN) / STD).unsqueeze(1)
        x = self.block3(self.pool(self.block2(self.pool(self.block1(x)))))
        return x.amax(dim=(3, 4)).transpose(1, 2)


class AudioEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1, self.block2, self.block3 = (TwoPathBlock(1, 32, 2, "m"), TwoPathBlock(32, 64, 2, "m"),
                                                 TwoPathBlock(64, 128, 2, "m"))
        self.pool = nn.MaxPool2d((1, 3), (1, 2), (0, 1))  # halves time: 100 Hz → 25 Hz over two pools

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) → (B, T, 128)."""
        x = mfcc.transpose(1, 2).unsqueeze(1)
        x = self.block3(self.pool(self.block2(self.pool(self.block1(x)))))
        return x.mean(dim=2).transpose(1, 2)


class TwoPassGru(nn.Module):
    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.gru_forward = nn.GRU(width, width, batch_first=True)
        self.gru_backward = nn.GRU(width, width, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.gru_forward(x)[0])
        x = self.gru_backward(x.flip(1))[0].flip(1)
        return nn.functional.gelu(x)


class LightAsd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visualEncoder, self.audioEncoder, self.GRU = VisualEncoder(), AudioEncoder(), TwoPassGru()
        self.head = nn.Linear(128, 2)

    def logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Encoded visual (B, T, 128) and audio (B, T, 128) → (B, T) speaking logit (class 1's output)."""
        return self.head(self.GRU(visual + audio))[..., 1]

    @staticmethod
    def load(name: str = WEIGHTS) -> "LightAsd":
        raw = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        state = {k.removeprefix("model."): v for k, v in raw.items() if k.startswith("model.")}
        state.update({"head.weight": raw["lossAV.FC.weight"], "head.bias": raw["lossAV.FC.bias"]})
        model = LightAsd()
        model.load_state_dict(state, strict=True)
        return model.eval()


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(N,) float audio at 16 kHz → (frames, 13) MFCC at 100 Hz, as the model was trained on."""
    import python_speech_features

    return python_speech_features.mfcc(audio * 32768.0, 16000, numcep=13, winlen=0.025, winstep=0.010).astype(np.float32)


def medfilt(x: np.ndarray, size: int = 13) -> np.ndarray:
    """Running median over ``size`` frames, edges repeated."""
    padded = np.pad(x, size // 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, size), axis=1)


def face_crops(frames, boxes: np.ndarray) -> np.ndarray:
    """BGR frames and per-frame boxes (x1, y1, x2, y2; NaN = not found, held from the nearest) → (T, 112, 112)
    uint8 grey crops, the authors' crop rule (`module docstring`)."""
    import cv2

    boxes = np.asarray(boxes, np.float64).copy()
    ok = ~np.isnan(boxes[:, 0])
    if not ok.any():
        raise ValueError("no face box in the clip")
    idx = np.arange(len(boxes))
    for j in range(4):
        boxes[:, j] = np.interp(idx, idx[ok], boxes[ok, j])
    half = medfilt(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, 13)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, 13)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, 13)
    out = []
    for t, frame in enumerate(frames):
        if t >= len(boxes):
            break
        bs = half[t]
        pad = int(bs * (1 + 2 * CROP_SCALE))
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
        my, mx = cy[t] + pad, cx[t] + pad
        face = padded[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)),
                      int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        grey = cv2.cvtColor(cv2.resize(face, (CROP_SIZE, CROP_SIZE)), cv2.COLOR_BGR2GRAY)
        out.append(grey[56:168, 56:168])
    return np.stack(out)


class Scorer:
    """Light-ASD with the visual side cached per clip (it is the expensive part and does not hear the audio)."""

    def __init__(self, threads: int = 1, weights: str = WEIGHTS) -> None:
        torch.set_num_threads(threads)
        self.model = LightAsd.load(weights)
        self.tag = Path(weights).stem

    def visual(self, key: str, frames, boxes: np.ndarray) -> np.ndarray:
        path = CACHE / "visual" / self.tag / f"{key}.npy"
        if path.exists():
            return np.load(path)
        crops = face_crops(frames, boxes)
        with torch.inference_mode():
            emb = torch.cat([self.model.visualEncoder(torch.from_numpy(crops[i:i + 100]).float()[None])[0]
                             for i in range(0, len(crops), 100)]).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
        return emb

    def logits(self, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Per video frame speaking logits of one face (visual (T, 128)) hearing ``audio`` (≥ T · 640 samples)."""
        feats = mfcc(audio)
        t = min(len(visual), len(feats) // 4)
        with torch.inference_mode():
            a = self.model.audioEncoder(torch.from_numpy(feats[:4 * t])[None])
            return self.model.logits(torch.from_numpy(visual[:t])[None], a)[0].numpy()


# ============================================================================ 1 s windows: own vs other audio


def sync_windows(split: str, threads: int = 1, weights: str = WEIGHTS, seed: int = 0) -> dict:
    """As `lab.real_faces.train_sync --evaluate`: every non-overlapping 1 s window of every clip of the split's
    identities; positive = the face with its own audio, negatives = another clip's audio (random clip of the
    pool), its own audio shifted 0.4–1 s, and near silence (does it hear at all?). Window score = mean logit, the model run on the window alone."""
    from lab.real_faces.train_sync import binary

    from lab.localization.real_footage import video_frames
    from lab.real_faces.face_tracks import TEST_IDS, VALIDATION_IDS, clips_of, load_group

    ids = TEST_IDS if split == "test" else VALIDATION_IDS
    scorer = Scorer(threads, weights)
    clips = []
    for ident in ids:
        for c in clips_of(load_group(ident)):
            path = data_root() / "video" / "real" / "voxceleb" / f"{c['name']}.mp4"  # name: "id09/014"
            vis = scorer.visual(c["name"].replace("/", "-"), video_frames(path), c["box"])
            audio = c["audio"]
            clips.append((ident, vis, audio))
    rng = np.random.default_rng(seed)
    pos, other, shifted, silence = [], [], [], []
    hiss = rng.normal(0, 10 ** (-60 / 20), 16000).astype(np.float32)  # a muted microphone, −60 dBFS
    for i, (ident, vis, audio) in enumerate(clips):
        n = min(len(vis), len(audio) // 640)
        for w in range(n // 25):
            v = vis[w * 25:(w + 1) * 25]
            own = audio[w * 16000:(w + 1) * 16000]
            pos.append(scorer.logits(v, own).mean())
            silence.append(scorer.logits(v, hiss).mean())
            j = int(rng.choice([k for k in range(len(clips)) if k != i]))
            oa = clips[j][2]
            s = int(rng.integers(0, max(1, len(oa) - 16000)))
            other.append(scorer.logits(v, np.resize(oa[s:s + 16000], 16000)).mean())
            lag = int(rng.uniform(0.4, 1.0) * 16000) * (1 if rng.random() < 0.5 else -1)
            s = w * 16000 + lag
            if 0 <= s and s + 16000 <= len(audio):
                shifted.append(scorer.logits(v, audio[s:s + 16000]).mean())
    pos, other, shifted, silence = map(np.array, (pos, other, shifted, silence))
    thresholds = None
    if split == "test":  # the thresholds chosen on validation, as train_sync --evaluate does
        chosen = json.loads(report_path("validation", weights).read_text())["sync"]
        thresholds = {k: chosen[f"{k}_best_threshold"] for k in ("other", "shifted", "silence")}
    out = {"split": split, "weights": weights, "windows": len(pos)}
    for name, neg in (("other", other), ("shifted", shifted), ("silence", silence)):
        out.update(binary(pos, neg, name, None if thresholds is None else thresholds[name]))
    return out


# ============================================================================ issue 14's two-person windows


def composites(split: str, threads: int = 1, weights: str = WEIGHTS) -> dict:
    """The composites of `lab.localization.real_footage` (both orders, either person speaking): per scored 1 s
    window, the face whose mean logit over the window's scored frames is higher. Light-ASD runs on each
    source clip's own frames and boxes (the composite scales them; the crop is resized to 224 anyway) with the
    composite's audio, over the whole composite (its GRU sees both directions)."""
    from lab.localization.real_footage import CACHE as FOOTAGE_CACHE
    from lab.localization.real_footage import (COMPOSITE_SEED, FaceEngine, clip_id, composite_record, composite_specs,
                                               clip_audio, fit_audio, scored_windows, video_frames)

    scorer = Scorer(threads, weights)
    specs = composite_specs(split)
    faces = FaceEngine(threads)
    tag = f"{split}-seed{COMPOSITE_SEED}"
    hits = total = 0
    per = []
    for spec in specs:
        truth = {p: dict(np.load(FOOTAGE_CACHE / "truth" / f"{clip_id(p)}.npz")) for p in (spec.left, spec.right)}
        rec = composite_record(spec, truth, None, faces, "none", tag)
        n = len(rec["speech"])
        speaking = spec.left if spec.speaker == 0 else spec.right
        speech_audio, fps = clip_audio(speaking)
        audio = fit_audio(speech_audio, n, fps)
        scores = []
        for path in (spec.left, spec.right):  # frames are decoded only when the visual cache misses
            vis = scorer.visual(clip_id(path), video_frames(path), truth[path]["box"])[:n]
            lg = np.full(n, -np.inf, np.float32)
            got = scorer.logits(vis, np.pad(audio, (0, 640)))
            lg[:len(got)] = got
            scores.append(lg)
        h = t = 0
        for frames in scored_windows(rec):
            pick = int(scores[1][frames].mean() > scores[0][frames].mean())
            h += pick == rec["speaker"]
            t += 1
        hits, total = hits + h, total + t
        per.append({"composite": spec.name, "windows": t, "on_speaker": h})
    return {"split": split, "windows": total, "on_speaker": hits, "accuracy": hits / max(total, 1), "composites": per}


def report_path(split: str, weights: str) -> Path:
    return CACHE / f"report-{split}-{Path(weights).stem}.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--composites", action="store_true")
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", choices=WEIGHT_FILES, default=WEIGHTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = {}
    if args.sync:
        report["sync"] = sync_windows(args.split, args.threads, args.weights)
    if args.composites:
        report["composites"] = composites(args.split, args.threads, args.weights)
    if not report:
        p.error("--sync and/or --composites")
    CACHE.mkdir(parents=True, exist_ok=True)
    out = report_path(args.split, args.weights)
    if out.exists():  # one part rerun keeps the other's figures
        report = {**json.loads(out.read_text()), **report}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "composites"} for k, v in report.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
