"""Stage 2 of issue 16: learn a causal lip encoder on real faces from audio-visual synchrony.

    python -m lab.real_faces.train_sync --minutes 60                  # train (resumes with --resume)
    python -m lab.real_faces.train_sync --evaluate                    # validation + test figures of the best model
    python -m lab.real_faces.train_sync --run NAME --export-onnx      # → NAME/lip_encoder.onnx, sync_audio.onnx

Free supervision, as SyncNet (Chung & Zisserman, 2016) is trained: the visual encoder
(`engines.faces.lip_encoder.LipEncoder`, causal, per frame) and an audio encoder (log-mel at 100 fps →
25 fps, non-causal, training only) map one face track and one audio track to per-frame embeddings.
Two contrastive (InfoNCE) terms:
* window level — a 1 s visual window against its own audio, the other windows' audio in the batch and
  their audio shifted ≥ 0.4 s (own clip's too): the score of a (face, audio) pair is the mean over the 25
  frames of the per-frame cosine, exactly what the evaluation thresholds;
* frame level — each frame's visual embedding against every audio frame of the batch, frames of the
  same clip within ±4 frames of the true one left out (nearby audio is not a wrong answer).

Negatives of the same person only (``--per-identity 8``, the default): a batch holds 8 clips of each of 6
identities and a window is contrasted only with windows of its own person. With negatives of anyone
(``--per-identity 0``) the pair can be told apart by *who* speaks (face ↔ voice identity, 12 training
people), a shortcut that fits the training identities and stalls on new ones (validation 0.81).

Identities: `face_tracks.TRAIN_IDS` only; the model kept is the one with the best validation accuracy
(`VALIDATION_IDS`); `TEST_IDS` are reported only.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.faces.lip_encoder import LipEncoder, LipEncoderCheckpoint, LipEncoderConfig
from engines.faces.sync_audio_encoder import MARGIN
from engines.faces.sync_audio_encoder import build as AudioSyncEncoder  # the module lives with the runtime
from lab.real_faces.face_tracks import REPO, TEST_IDS, TRAIN_IDS, VALIDATION_IDS, require_data
from lab.real_faces.real_data import MEL_PER_FRAME, N_MELS, RealClip, lip_stats, load_clips

log = logging.getLogger(__name__)
RUN_DIR = REPO / "out" / "real_faces" / "sync"
WINDOW = 25  # video frames in a scored window: 1 s
MIN_SHIFT = 10  # frames: a shifted negative is ≥ 0.4 s away
MAX_SHIFT = 25


def mel_window(clip: RealClip, start: int, frames: int) -> np.ndarray:
    """Mel frames for video frames [start, start + frames) with MARGIN on each side (edge: the clip's floor)."""
    lo, hi = MEL_PER_FRAME * start - MARGIN, MEL_PER_FRAME * (start + frames) + MARGIN
    mel = clip.mel
    out = np.full((hi - lo, N_MELS), mel.min(), np.float32)
    a, b = max(lo, 0), min(hi, len(mel))
    out[a - lo:b - lo] = mel[a:b]
    return out


def visual_window(clip: RealClip, start: int, frames: int, history: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops and lip inputs for [start − history, start + frames), absent (zeros) before the clip."""
    lo = start - history
    crops = np.zeros((frames + history, *clip.crops.shape[1:]), np.uint8)
    lips = np.zeros((frames + history, clip.lips.shape[1]), np.float32)
    a = max(lo, 0)
    crops[a - lo:] = clip.crops[a:start + frames]
    lips[a - lo:] = clip.lips[a:start + frames]
    return crops, lips


class SyncSampler:
    """Batches of 1 s windows. With ``per_identity`` > 0 a batch holds that many clips of each of
    ``batch / per_identity`` identities, so every window has negatives of its own person (see `sync_loss`)."""

    def __init__(self, clips: list[RealClip], history: int, seed: int = 0, augment: bool = True,
                 per_identity: int = 0) -> None:
        self.clips, self.history, self.augment, self.per_identity = clips, history, augment, per_identity
        self.rng = np.random.default_rng(seed)
        self.weights = np.array([c.frames for c in clips], np.float64)
        self.weights /= self.weights.sum()
        names = sorted({c.identity for c in clips})
        self.identity = np.array([names.index(c.identity) for c in clips])
        self.id_weights = np.array([self.weights[self.identity == i].sum() for i in range(len(names))])

    def choose(self, batch: int) -> np.ndarray:
        rng = self.rng
        if not self.per_identity:
            return rng.choice(len(self.clips), size=batch, replace=False, p=self.weights)
        k = batch // self.per_identity
        people = rng.choice(len(self.id_weights), size=k, replace=False, p=self.id_weights)
        idx = []
        for person in people:
            own = np.flatnonzero(self.identity == person)
            w = self.weights[own] / self.weights[own].sum()
            idx.extend(rng.choice(own, size=self.per_identity, replace=len(own) < self.per_identity, p=w))
        return np.array(idx)

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        rng, h = self.rng, self.history
        idx = self.choose(batch)
        crops, lips, mel, shifted, clip_ids = [], [], [], [], []
        for i in idx:
            clip = self.clips[i]
            start = int(rng.integers(0, clip.frames - WINDOW + 1))
            c, l = visual_window(clip, start, WINDOW, h)
            if self.augment:
                c, l = self.jitter(c, l)
            shifts = [d for d in range(-MAX_SHIFT, MAX_SHIFT + 1)
                      if abs(d) >= MIN_SHIFT and 0 <= start + d <= clip.frames - WINDOW]
            d = int(rng.choice(shifts))
            crops.append(c)
            lips.append(l)
            mel.append(mel_window(clip, start, WINDOW))
            shifted.append(mel_window(clip, start + d, WINDOW))
            clip_ids.append(i)
        return {"crops": torch.from_numpy(np.stack(crops).astype(np.float32)), "lips": torch.from_numpy(np.stack(lips)),
                "mel": torch.from_numpy(np.stack(mel)), "shifted": torch.from_numpy(np.stack(shifted)),
                "clip": torch.tensor(clip_ids), "identity": torch.from_numpy(self.identity[idx])}

    def jitter(self, crops: np.ndarray, lips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window: a mirror image (crop and lip contour together), a shift (±2 px) and scale (±8 %)
        (where the mesh puts the mouth), brightness/contrast; per frame: ±1 px tremor, lip-vector noise,
        and now and then a dropped frame (a missed detection)."""
        import cv2

        rng = self.rng
        out = crops.astype(np.float32)
        lips = lips.copy()
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
            contour = lips[:, 3:83].reshape(-1, 40, 2)[:, MIRROR]
            contour[..., 0] *= -1
            lips[:, 3:83] = contour.reshape(-1, 80)
        h, w = out.shape[1:]
        k = rng.uniform(0.92, 1.08)
        dx, dy = rng.uniform(-2, 2, size=2)
        m = np.float32([[k, 0, (1 - k) * w / 2 + dx], [0, k, (1 - k) * h / 2 + dy]])
        out = np.stack([cv2.warpAffine(np.ascontiguousarray(f), m, (w, h), borderMode=cv2.BORDER_REPLICATE) for f in out])
        for t in range(len(out)):
            if rng.random() < 0.3:
                out[t] = np.roll(out[t], tuple(int(v) for v in rng.integers(-1, 2, size=2)), axis=(0, 1))
        out = np.clip(out * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30), 0, 255)
        present = lips[:, -1:] > 0
        lips[:, :-1] += rng.normal(0, 0.01, size=lips[:, :-1].shape).astype(np.float32) * present
        drop = rng.random(len(lips)) < 0.03
        lips[drop] = 0.0
        out[drop] = 0.0
        return out.astype(np.uint8), lips


def _mirror_order() -> np.ndarray:
    """Contour point order of the mirrored mouth: each loop runs corner → lower lip → other corner → upper lip
    (20 points, corners at 0 and 10), so point p of a loop becomes 10 − p (lower) or 30 − p (upper)."""
    loop = np.array([(10 - p) % 20 if p <= 10 else 30 - p for p in range(20)])
    return np.concatenate([loop, loop + 20])


MIRROR = _mirror_order()


def window_scores(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """(B, T, E) × (B', T, E) → (B, B') mean per-frame cosine."""
    v, a = F.normalize(v, dim=-1), F.normalize(a, dim=-1)
    return torch.einsum("bte,cte->bc", v, a) / v.shape[1]


def sync_loss(v: torch.Tensor, a: torch.Tensor, a_shift: torch.Tensor, clip: torch.Tensor, identity: torch.Tensor | None,
              scale_w: torch.Tensor, scale_f: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """InfoNCE at window and frame level. With ``identity`` given, negatives are only windows of the same
    person (other clips, and shifted audio): a face can then not be told from another by *who* speaks,
    only by *when* — the identity shortcut that does not carry over to people never seen."""
    b, t, _ = v.shape
    s = torch.cat([window_scores(v, a), window_scores(v, a_shift)], dim=1) * scale_w.exp()
    eye = torch.eye(b, dtype=torch.bool)
    # another window of the same clip may overlap this one: not a negative
    banned = (clip[:, None] == clip[None, :]) & ~eye
    banned_shift = torch.zeros_like(banned)
    if identity is not None:
        other_person = identity[:, None] != identity[None, :]
        banned, banned_shift = banned | other_person, other_person
    s = s.masked_fill(torch.cat([banned, banned_shift], dim=1), -1e4)
    target = torch.arange(b)
    loss_w = F.cross_entropy(s, target)
    vf, af = F.normalize(v, dim=-1).reshape(b * t, -1), F.normalize(a, dim=-1).reshape(b * t, -1)
    sf = vf @ af.T * scale_f.exp()
    frame = torch.arange(t).repeat(b)
    item = torch.arange(b).repeat_interleave(t)
    near = (clip[item][:, None] == clip[item][None, :]) & ((frame[:, None] - frame[None, :]).abs() <= 4) \
        & ~torch.eye(b * t, dtype=torch.bool)
    if identity is not None:
        near = near | (identity[item][:, None] != identity[item][None, :])
    sf = sf.masked_fill(near, -1e4)
    loss_f = F.cross_entropy(sf, torch.arange(b * t))
    acc = (s.argmax(1) == target).float().mean()
    return loss_w + loss_f, {"window": loss_w.item(), "frame": loss_f.item(), "acc": acc.item()}


def embed_clip(model: LipEncoder, clip: RealClip) -> np.ndarray:
    """(T, E) visual embeddings of a whole clip, offline (= streaming from zero state)."""
    with torch.no_grad():
        v, _ = model(torch.from_numpy(clip.crops[None].astype(np.float32)), torch.from_numpy(clip.lips[None]),
                     model.initial_state(1))
    return v[0].numpy()


def audio_embed_clip(audio_model: AudioSyncEncoder, clip: RealClip) -> np.ndarray:
    with torch.no_grad():
        return audio_model(torch.from_numpy(mel_window(clip, 0, clip.frames)[None]))[0].numpy()


def pair_scores(v: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """One (face window, audio window) pair → (mean per-frame cosine, contrast): the contrast subtracts the
    mean cosine of the same window's frames paired ≥ 0.2 s apart, so a face whose embeddings lean towards
    any speech is not taken for in sync. Both use the 1 s window alone."""
    v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-9)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-9)
    sim = v @ a.T
    t = np.arange(len(v))
    apart = np.abs(t[:, None] - t[None, :]) >= 5
    diag = float(np.trace(sim) / len(v))
    return diag, diag - float(sim[apart].mean())


def evaluate(model: LipEncoder, audio_model: AudioSyncEncoder, clips: list[RealClip], seed: int = 0,
             thresholds: dict[str, float] | None = None) -> dict:
    """Binary sync decisions on 1 s windows (every non-overlapping window of every clip).

    positive: the face with its own audio; negative "other": the same face with a window of another
    clip's audio (fixed random choice); negative "shifted": its own audio ≥ 0.4 s away. For each score
    (``other``/``shifted``: mean cosine; ``*_contrast``: see `pair_scores`): AUC, the best threshold on
    these windows and the balanced accuracy there (``*_acc_at_best``), and at ``thresholds[name]`` if given
    (``*_acc``: thresholds chosen on other windows, e.g. validation)."""
    model.eval()
    audio_model.eval()
    rng = np.random.default_rng(seed)
    vis = [embed_clip(model, c) for c in clips]
    aud = [audio_embed_clip(audio_model, c) for c in clips]
    pos, other, shifted = [], [], []
    for i, c in enumerate(clips):
        for s in range(0, c.frames - WINDOW + 1, WINDOW):
            v = vis[i][s:s + WINDOW]
            pos.append(pair_scores(v, aud[i][s:s + WINDOW]))
            j = int(rng.choice([k for k in range(len(clips)) if k != i]))
            s2 = int(rng.integers(0, clips[j].frames - WINDOW + 1))
            other.append(pair_scores(v, aud[j][s2:s2 + WINDOW]))
            shifts = [d for d in range(-MAX_SHIFT, MAX_SHIFT + 1) if abs(d) >= MIN_SHIFT and 0 <= s + d <= c.frames - WINDOW]
            d = int(rng.choice(shifts))
            shifted.append(pair_scores(v, aud[i][s + d:s + d + WINDOW]))
    pos, other, shifted = map(np.array, (pos, other, shifted))
    out: dict = {"windows": len(pos)}
    for k, suffix in enumerate(("", "_contrast")):
        for name, neg in (("other", other), ("shifted", shifted)):
            key = name + suffix
            out.update(binary(pos[:, k], neg[:, k], key, (thresholds or {}).get(key)))
    return out


def binary(pos: np.ndarray, neg: np.ndarray, name: str, threshold: float | None) -> dict:
    cand = np.sort(np.concatenate([pos, neg]))
    bal = lambda th: 0.5 * ((pos > th).mean() + (neg <= th).mean())  # noqa: E731
    best = max(cand, key=bal)
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    out = {f"{name}_auc": auc, f"{name}_best_threshold": float(best), f"{name}_acc_at_best": float(bal(best))}
    if threshold is not None:
        out[f"{name}_acc"] = float(bal(threshold))
    return out


def build(config: LipEncoderConfig, clips: list[RealClip], freq_mask: int = 0) -> tuple[LipEncoder, AudioSyncEncoder, nn.Parameter]:
    model = LipEncoder(config)
    mean, std = lip_stats(clips)
    model.lip_mean.copy_(torch.from_numpy(mean))
    model.lip_std.copy_(torch.from_numpy(std))
    audio = AudioSyncEncoder(config.out_dim, freq_mask=freq_mask, dropout=config.dropout)
    scales = nn.Parameter(torch.tensor([math.log(10.0), math.log(10.0)]))
    return model, audio, scales


def train(minutes: float, batch: int, lr: float, seed: int, resume: bool, run: str, config: LipEncoderConfig,
          eval_every: int = 200, per_identity: int = 8, freq_mask: int = 0, weight_decay: float = 1e-4) -> Path:
    require_data()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    out = RUN_DIR / run
    out.mkdir(parents=True, exist_ok=True)
    train_clips = load_clips(TRAIN_IDS)
    val_clips = load_clips(VALIDATION_IDS)
    log.info("train: %d clips (%.1f min), validation: %d clips", len(train_clips),
             sum(c.frames for c in train_clips) / 25 / 60, len(val_clips))
    model, audio, scales = build(config, train_clips, freq_mask)
    model.cnn.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + list(audio.parameters()) + [scales]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    state_path, best_path, curve_path = out / "state.pt", out / "best.pt", out / "curve.csv"
    step, best, elapsed0 = 0, -1.0, 0.0
    if resume and state_path.exists():
        raw = torch.load(state_path, weights_only=False)
        model.load_state_dict(raw["model"])
        audio.load_state_dict(raw["audio"])
        scales.data.copy_(raw["scales"])
        opt.load_state_dict(raw["opt"])
        step, best, elapsed0 = raw["step"], raw["best"], raw.get("elapsed", 0.0)
        log.info("resumed at step %d (best validation %.3f)", step, best)
    sampler = SyncSampler(train_clips, config.history, seed=seed + step, per_identity=per_identity)
    total = minutes * 60
    start = time.monotonic() - elapsed0
    from tqdm import tqdm

    bar = tqdm(desc="sync", initial=step, mininterval=10.0)
    running = None
    with open(curve_path, "a", newline="") as f:
        writer = csv.writer(f)
        if f.tell() == 0:
            writer.writerow(["step", "seconds", "train_loss", "train_window_acc", "val_other_acc_at_best",
                             "val_shifted_acc_at_best", "val_other_auc"])
        while time.monotonic() - start < total:
            frac = (time.monotonic() - start) / total
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, frac / 0.03 + 0.05) * 0.5 * (1 + math.cos(math.pi * frac))
            model.train()
            audio.train()
            b = sampler.sample(batch)
            v, _ = model(b["crops"], b["lips"], model.initial_state(batch))
            v = v[:, config.history:]
            a = audio(torch.cat([b["mel"], b["shifted"]]))
            loss, parts = sync_loss(v, a[:batch], a[batch:], b["clip"], b["identity"] if per_identity else None,
                                    scales[0], scales[1])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            with torch.no_grad():
                scales.clamp_(0.0, math.log(100.0))
            step += 1
            running = parts if running is None else {k: 0.98 * running[k] + 0.02 * parts[k] for k in parts}
            bar.update(1)
            bar.set_postfix(loss=f"{running['window'] + running['frame']:.3f}", acc=f"{running['acc']:.2f}", refresh=False)
            if step % eval_every == 0:
                r = evaluate(model, audio, val_clips)
                writer.writerow([step, round(time.monotonic() - start), round(running["window"] + running["frame"], 4),
                                 round(running["acc"], 4), round(r["other_acc_at_best"], 4),
                                 round(r["shifted_acc_at_best"], 4), round(r["other_auc"], 4)])
                f.flush()
                log.info("step %d: validation %s", step, json.dumps({k: round(v, 3) for k, v in r.items()}))
                score = r["other_acc_at_best"] + 0.5 * r["shifted_acc_at_best"]
                if score > best:
                    best = score
                    save(best_path, model, audio, r, step, time.monotonic() - start)
                torch.save({"model": model.state_dict(), "audio": audio.state_dict(), "scales": scales.data,
                            "opt": opt.state_dict(), "step": step, "best": best,
                            "elapsed": time.monotonic() - start}, state_path)
    bar.close()
    return best_path


def save(path: Path, model: LipEncoder, audio: AudioSyncEncoder, val: dict, step: int, seconds: float) -> None:
    info = {"step": step, "train_seconds": round(seconds), "validation": val, "train_ids": TRAIN_IDS,
            "validation_ids": VALIDATION_IDS}
    LipEncoderCheckpoint(model.config, {k: v.detach().clone() for k, v in model.state_dict().items()}, info).save(path)
    torch.save(audio.state_dict(), path.with_name(path.stem + "-audio.pt"))


def load_pair(path: Path) -> tuple[LipEncoder, AudioSyncEncoder]:
    model = LipEncoderCheckpoint.load(path).model()
    audio = AudioSyncEncoder(model.config.out_dim)
    audio.load_state_dict(torch.load(path.with_name(path.stem + "-audio.pt"), weights_only=True))
    return model, audio.eval()


def final_report(path: Path) -> dict:
    """Thresholds chosen on validation, applied to test (TEST_IDS): the figures the README reports, printed
    and written to ``report.json`` beside the checkpoint."""
    torch.set_num_threads(1)
    model, audio = load_pair(path)
    val = evaluate(model, audio, load_clips(VALIDATION_IDS))
    names = ("other", "shifted", "other_contrast", "shifted_contrast")
    test = evaluate(model, audio, load_clips(TEST_IDS), thresholds={n: val[f"{n}_best_threshold"] for n in names})
    out = {"checkpoint": str(path), "step": LipEncoderCheckpoint.load(path).info.get("step"),
           "validation": {k: round(v, 4) for k, v in val.items()},
           "test": {k: round(v, 4) for k, v in test.items()}}
    text = json.dumps(out, indent=1)
    print(text)
    (path.parent / "report.json").write_text(text + "\n")
    return out


def export_pair(run_dir: Path) -> list[Path]:
    """``run_dir``'s best.pt / best-audio.pt → ``run_dir``/lip_encoder.onnx and sync_audio.onnx, exported as the
    shipped pair is (`lab.onnx_export`, the registry's specs with the factory pointed at this run's files), so
    `lab.localization.real_footage` can run another training run's pair (``--sync-run``). Prints each file's
    max |ONNX − torch| on the registry's check inputs; raises FileNotFoundError without the .pt files."""
    from dataclasses import replace

    from engines.models import MODELS
    from lab.onnx_export import ExportReport, export_onnx, max_abs_error

    best = run_dir / "best.pt"
    for f in (best, best.with_name(best.stem + "-audio.pt")):
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing: train it with "
                                    f"`python -m lab.real_faces.train_sync --run {run_dir.name}`")
    specs = (replace(MODELS["lip_encoder"], factory=lambda: load_pair(best)[0]),
             replace(MODELS["sync_audio"], factory=lambda: load_pair(best)[1]))
    out = []
    for spec in specs:
        path = export_onnx(spec, run_dir / f"{spec.name}.onnx")
        report = ExportReport(spec.name, path, spec.opset, max_abs_error(spec, path), spec.atol)
        print(report.line())
        if not report.ok:
            raise RuntimeError(f"{path}: ONNX differs from torch by {report.max_abs_error:.2e} > {spec.atol:g}")
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default="main")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--per-identity", type=int, default=8,
                   help="clips per identity in a batch, negatives of the same person only (0: any clips, all negatives)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout in both encoders (training only)")
    p.add_argument("--freq-mask", type=int, default=0, help="mask a random band of up to this many mels (training)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--no-crops", action="store_true", help="mesh lip vector only")
    p.add_argument("--no-lips", action="store_true", help="mouth crops only")
    p.add_argument("--evaluate", action="store_true", help="report validation and test figures of <run>/best.pt")
    p.add_argument("--export-onnx", action="store_true",
                   help="export <run>/best.pt + best-audio.pt as <run>/lip_encoder.onnx + sync_audio.onnx")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.export_onnx:
        torch.set_num_threads(1)
        try:
            export_pair(RUN_DIR / args.run)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.evaluate:
        final_report(RUN_DIR / args.run / "best.pt")
        return 0
    config = LipEncoderConfig(use_crops=not args.no_crops, use_lips=not args.no_lips, dropout=args.dropout)
    best = train(args.minutes, args.batch_size, args.lr, args.seed, args.resume, args.run, config, args.eval_every,
                 args.per_identity, args.freq_mask, args.weight_decay)
    final_report(best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
