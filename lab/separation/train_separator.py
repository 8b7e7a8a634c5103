"""`launch.py train-separator`: train the AV separator and the audio-only PIT baseline.

    python launch.py train-separator --build-cache 360 --cache-minutes 17 --minutes 0   # render face units once
    python launch.py train-separator --mode av --features magnitude --identity-init --minutes 20
    python launch.py train-separator --mode audio-only --minutes 10          # PIT baseline
    python launch.py train-separator --write-pack out/separation/units.npz --minutes 0   # for a GPU machine
    python launch.py train-separator --pack out/separation/units.npz --device cuda --batch-size 32 \
        --hidden 384 --audio-dim 256 --loss sisdr --features magnitude --identity-init --minutes 6

(The shipped AV weights are a 4-minute ``--run-name`` experiment of the second line; see MODEL_CARD.md.)

Needs ../shared/data (LibriSpeech train-clean-100, noise recordings) and espeak-ng for the corpus.
Training is time-boxed (``--minutes``) because that is what a CPU session can afford; it writes
a checkpoint every ``--save-every`` steps to ``out/separation/<mode>.pt`` (resumed with
``--resume``), the learning curve to ``out/separation/<mode>-curve.csv`` and the final weights to
``out/separation/<mode or run name>-weights.pt``. This is the first separator's network (the GRU of
`engines.separation.separator_model`, generated faces); the shipped separators are CRNs trained on real faces
since session 11 (`engines/separation/MODEL_CARD.md` says how), so it never writes ``engines/weights``.

On a GPU machine (no shared recordings, no renderer there) training reads a *pack* of the cache
(``--write-pack`` here, ``--pack`` there; see :func:`lab.separation.separation_samples.save_pack`). Either way
the last cache shard is held out as validation clips, so the curve measures unheard mixtures.

Loss (``--loss spectral``): Looking to Listen's power-law compressed spectral loss (magnitude and complex terms on
|·|^0.3-compressed spectra), which weights quiet speech fairly and trains faster on a CPU than a
waveform loss. The audio-only model takes the minimum over the 3! assignments of its 3 masks to the
(zero-padded) sources: permutation-invariant training (Yu et al., 2017). ``--loss sisdr`` (AV only)
trains on what the evaluation measures: negative SI-SDR of each face's ISTFT output against its clean
voice (passed through the same STFT/ISTFT, so a perfect mask scores perfectly).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from lab.separation.separation_samples import (CACHE_DIR, MixtureSampler, build_cache, lips_at_stft_rate, load_pack,
                                     load_units, save_pack)
from engines.separation.separator_model import POWER, CausalSeparator, Checkpoint, SeparatorConfig, apply_mask

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / "out" / "separation"
MAX_SPEAKERS = 3


def torch_stft(x: torch.Tensor) -> torch.Tensor:
    """(B, N) → (B, T, F, 2): the frames of engines.dsp.stft (center=False, periodic Hann 400 in 512)."""
    spec = torch.stft(x, n_fft=512, hop_length=160, win_length=400, window=torch.hann_window(400, device=x.device),
                      center=False, return_complex=True)
    return torch.view_as_real(spec).transpose(1, 2).contiguous()


def torch_istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, F, 2) → (B, length): windowed overlap-add, the inverse of :func:`torch_stft` where the
    windows overlap (``torch.istft`` refuses ``center=False`` frames: the periodic Hann starts at 0).
    ``torch.stft`` centres the 400-sample window in the 512-sample frame, so the synthesis does too."""
    pad = (512 - 400) // 2
    window = torch.nn.functional.pad(torch.hann_window(400, device=spec.device), (pad, pad))
    frames = torch.fft.irfft(torch.view_as_complex(spec.contiguous()), n=512) * window  # (B, T, 512)
    b, t = frames.shape[:2]
    size = (t - 1) * 160 + 512
    fold = torch.nn.functional.fold
    signal = fold(frames.transpose(1, 2), (1, size), kernel_size=(1, 512), stride=(1, 160)).view(b, size)
    norm = fold(window.pow(2).view(1, 512, 1).expand(1, 512, t), (1, size), kernel_size=(1, 512), stride=(1, 160))
    signal = signal / norm.view(size).clamp_min(1e-3)
    return torch.nn.functional.pad(signal, (0, max(0, length - size)))[:, :length]


def neg_si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B, N) → (B,): −SI-SDR in dB, zero-mean, with an ε floor so near-silent crops stay finite."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + 1e-8)
    target = scale * reference
    ratio = (target.pow(2).sum(-1) + 1e-8) / ((estimate - target).pow(2).sum(-1) + 1e-8)
    return -10 * torch.log10(ratio)


def compressed(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, F, 2) → (|S|^p, S·|S|^(p−1)): compressed magnitude and compressed complex spectrum."""
    mag = spec.pow(2).sum(-1).add(1e-10).sqrt()
    return mag.pow(POWER), spec * mag.pow(POWER - 1).unsqueeze(-1)


def spectral_loss(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per item (leading dims kept, averaged over T, F): compressed magnitude + complex MSE."""
    em, ec = compressed(estimate)
    rm, rc = compressed(reference)
    return (em - rm).pow(2).mean(dim=(-1, -2)) + (ec - rc).pow(2).sum(-1).mean(dim=(-1, -2))


def build_model(mode: str, **options) -> CausalSeparator:
    """``options``: SeparatorConfig fields to change (``features``, ``identity_init``)."""
    if mode == "av":
        return CausalSeparator(SeparatorConfig(**options))
    return CausalSeparator(SeparatorConfig(lip_dim=0, n_masks=MAX_SPEAKERS, **options))


def step_loss(model: CausalSeparator, mode: str, batch: dict[str, np.ndarray], loss: str = "spectral") -> torch.Tensor:
    """One batch's loss. AV: one row per (mixture, face). Audio-only: PIT over 3 masks."""
    device = next(model.parameters()).device
    wave = torch.from_numpy(batch["mixture"]).to(device)
    mixture = torch_stft(wave)  # (B, T, F, 2)
    b, t = mixture.shape[:2]
    sources = torch.from_numpy(batch["targets"]).to(device)
    targets = torch_stft(sources.flatten(0, 1)).view(b, MAX_SPEAKERS, t, -1, 2)
    if mode == "av":
        rows = [(i, k) for i in range(b) for k in range(int(batch["n_speakers"][i]))]
        ii, kk = [i for i, _ in rows], [k for _, k in rows]
        mix_rows = mixture[ii]
        lips = torch.from_numpy(lips_at_stft_rate(batch["lips"], t))[ii, kk].to(device)
        vis, gru = model.initial_state(len(rows), device)
        mask, _, _ = model(mix_rows, lips, vis, gru)
        estimate = apply_mask(mask[:, :, 0], mix_rows)
        if loss == "sisdr":
            n = wave.shape[-1]
            return neg_si_sdr(torch_istft(estimate, n), torch_istft(targets[ii, kk], n)).mean()
        return spectral_loss(estimate, targets[ii, kk]).mean()
    vis, gru = model.initial_state(b, device)
    mask, _, _ = model(mixture, mixture.new_zeros(b, t, 0), vis, gru)  # (B, T, M, F, 2)
    estimates = apply_mask(mask, mixture.unsqueeze(2)).transpose(1, 2)  # (B, M, T, F, 2)
    losses = torch.stack([
        torch.stack([spectral_loss(estimates[:, m], targets[:, s]) for m, s in enumerate(perm)]).mean(0)
        for perm in itertools.permutations(range(MAX_SPEAKERS))
    ])  # (P, B)
    return losses.min(dim=0).values.mean()


def training_units(pack: Path | None) -> tuple[tuple, tuple, object]:
    """(train voices, lips), (validation voices, lips), noise source: from a pack or the cache.

    The last cache shard (or the pack's validation units) is held out: its clips are never trained on."""
    if pack is not None:
        return load_pack(pack)
    return (*load_units(), None)


class Prefetcher:
    """Batches drawn in background threads, so a GPU step never waits for numpy mixing."""

    def __init__(self, make_sampler, batch_size: int, threads: int = 2, depth: int = 8) -> None:
        import queue
        import threading

        self.queue: "queue.Queue[dict]" = queue.Queue(depth)
        self.stopped = threading.Event()

        def work(sampler) -> None:
            while not self.stopped.is_set():
                batch = sampler.sample(batch_size)
                while not self.stopped.is_set():
                    try:
                        self.queue.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue

        self.workers = [threading.Thread(target=work, args=(make_sampler(i),), daemon=True) for i in range(threads)]
        for w in self.workers:
            w.start()

    def next(self) -> dict:
        return self.queue.get()

    def close(self) -> None:
        self.stopped.set()


def learning_rate(base: float, elapsed: float, total: float, warmup: float = 0.02) -> float:
    """Linear warm-up then cosine decay over the *time* box: a time-boxed run ends annealed."""
    frac = min(1.0, elapsed / max(total, 1e-9))
    if frac < warmup:
        return base * max(frac / warmup, 0.05)
    return base * 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))


def train(mode: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int,
          resume: bool, save_every: int, threads: int, crop_s: float = 1.5, run_name: str = "",
          model_options: dict | None = None, device: str = "cpu", pack: Path | None = None,
          loss: str = "spectral", out_dir: Path = RUN_DIR, loader_threads: int = 0,
          init_weights: Path | None = None) -> Path:
    """Train one model. ``run_name`` marks an experiment: its files go to <out_dir>/<run_name>*
    and the shipped weights in engines/weights are left alone."""
    if loss == "sisdr" and mode != "av":
        raise ValueError("--loss sisdr is for the AV model (the PIT baseline pads absent voices with silence)")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if device.startswith("cuda"):  # TF32 matmuls: ~3× faster on Ampere+ at no cost to a mask network
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    (voices, lips), (val_voices, val_lips), noise = training_units(pack)
    val = MixtureSampler(val_voices, val_lips, seed=seed + 12345, noise=noise, crop_s=crop_s).sample(32)
    if init_weights is not None:  # fine-tune: the checkpoint's config wins over the size options
        model = Checkpoint.load(init_weights).model().to(device)
    else:
        model = build_model(mode, **(model_options or {})).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name or mode
    ckpt_path, curve_path = out_dir / f"{name}.pt", out_dir / f"{name}-curve.csv"
    weights_out = out_dir / f"{run_name or mode}-weights.pt"
    step = 0
    if resume and ckpt_path.exists():
        raw = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(raw["state_dict"])
        optimiser.load_state_dict(raw["optimiser"])
        step = int(raw["step"])
    log.info("%s on %s: %d training + %d validation face units, %d parameters, %s loss, resuming at step %d",
             mode, device, len(voices), len(val_voices), sum(p.numel() for p in model.parameters()), loss, step)
    from tqdm import tqdm

    def make_sampler(i: int) -> MixtureSampler:
        return MixtureSampler(voices, lips, seed=seed + 1000 * i + step, crop_s=crop_s, noise=noise)

    feed = Prefetcher(make_sampler, batch_size, loader_threads) if loader_threads else None
    sampler = None if feed else make_sampler(0)
    start, total = time.monotonic(), minutes * 60
    running, val_loss = None, float("nan")

    def save() -> None:
        info = {"mode": mode, "steps": step, "batch_size": batch_size, "lr": lr, "seed": seed, "loss": loss,
                "device": device, "face_units": int(len(voices)), "validation_units": int(len(val_voices)),
                "crop_s": crop_s, "train_minutes": round((time.monotonic() - start) / 60, 1),
                "final_train_loss": running, "validation_loss": val_loss,
                "init_weights": str(init_weights) if init_weights else None}
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        Checkpoint(model.config, state, info).save(weights_out)
        torch.save({"state_dict": state, "optimiser": optimiser.state_dict(), "step": step}, ckpt_path)

    bar = tqdm(total=max_steps, initial=step, desc=f"train {mode}", mininterval=5.0)
    with open(curve_path, "a", newline="") as f, bar:
        writer = csv.writer(f)
        if f.tell() == 0:
            writer.writerow(["step", "seconds", "train_loss", "val_loss"])
        while step < max_steps and time.monotonic() - start < total:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(lr, time.monotonic() - start, total)
            model.train()
            batch = feed.next() if feed else sampler.sample(batch_size)
            value = step_loss(model, mode, batch, loss)
            optimiser.zero_grad()
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            step += 1
            running = value.item() if running is None else 0.98 * running + 0.02 * value.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if step % save_every == 0:
                model.eval()
                with torch.no_grad():
                    val_loss = step_loss(model, mode, val, loss).item()
                writer.writerow([step, round(time.monotonic() - start, 1), round(running, 5), round(val_loss, 5)])
                f.flush()
                save()
    if feed:
        feed.close()
    save()
    log.info("wrote %s after %d steps (train %.4f, validation %.4f)", weights_out, step, running or float("nan"), val_loss)
    return weights_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch.py train-separator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("av", "audio-only"), default="av")
    p.add_argument("--build-cache", type=int, default=0, metavar="CLIPS",
                   help="render this many training clips into face units first (resumes; 0 = skip)")
    p.add_argument("--cache-workers", type=int, default=2)
    p.add_argument("--cache-minutes", type=float, default=None, help="stop starting new cache shards after this")
    p.add_argument("--write-pack", type=Path, default=None, metavar="FILE",
                   help="pack the cache into FILE for a machine without the shared data (µ-law voices)")
    p.add_argument("--pack-max-units", type=int, default=None, help="cap the packed units (size limit)")
    p.add_argument("--pack", type=Path, default=None, metavar="FILE", help="train from a pack, not the cache")
    p.add_argument("--minutes", type=float, default=20.0, help="training time box (0 = only build the cache)")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=6, help="mixtures per step (AV: one row per face)")
    p.add_argument("--crop-seconds", type=float, default=1.5)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warm-up, then cosine over the time box)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loader-threads", type=int, default=0, help="background batch threads (0 = draw inline)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init-weights", type=Path, default=None, help="start from these weights (fine-tune, new optimiser)")
    p.add_argument("--loss", choices=("spectral", "sisdr"), default="spectral")
    p.add_argument("--features", choices=("complex", "magnitude"), default="magnitude",
                   help="network input: compressed magnitude (shipped) or the paper's compressed real/imag")
    p.add_argument("--identity-init", action=argparse.BooleanOptionalAction, default=True,
                   help="start from mask = 1 (shipped) instead of mask = 0")
    p.add_argument("--hidden", type=int, default=None, help="GRU width (default: SeparatorConfig's)")
    p.add_argument("--audio-dim", type=int, default=None, help="audio projection width")
    p.add_argument("--layers", type=int, default=None, help="GRU layers")
    p.add_argument("--run-name", default="", help="an experiment: write to <out-dir>/<name>*, not engines/weights")
    p.add_argument("--out-dir", type=Path, default=RUN_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.build_cache:
        deadline = None if args.cache_minutes is None else args.cache_minutes * 60
        shards = build_cache(args.build_cache, args.cache_workers, deadline_s=deadline)
        log.info("%d cache shards in %s", shards, CACHE_DIR)
    if args.write_pack:
        log.info("pack %s: %s", args.write_pack, save_pack(args.write_pack, max_units=args.pack_max_units))
    if args.minutes > 0:
        options = {"features": args.features, "identity_init": args.identity_init}
        options |= {k: v for k, v in (("hidden", args.hidden), ("audio_dim", args.audio_dim),
                                      ("layers", args.layers)) if v is not None}
        train(args.mode, args.minutes, args.steps, args.batch_size, args.lr, args.seed, args.resume,
              args.save_every, args.threads, args.crop_seconds, args.run_name, options, args.device,
              args.pack, args.loss, args.out_dir, args.loader_threads, args.init_weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
