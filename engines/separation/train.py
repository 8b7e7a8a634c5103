"""`launch.py train-separator`: train the AV separator and the audio-only PIT baseline.

    python launch.py train-separator --build-cache 360 --cache-minutes 17 --minutes 0   # render face units once
    python launch.py train-separator --mode av --features magnitude --identity-init --minutes 20
    python launch.py train-separator --mode audio-only --minutes 10          # PIT baseline

(The shipped AV weights are a 4-minute ``--run-name`` experiment of the second line; see MODEL_CARD.md.)

Needs ../shared/data (LibriSpeech train-clean-100, noise recordings) and espeak-ng for the corpus.
Training is time-boxed (``--minutes``) because that is what a CPU session can afford; it writes
a checkpoint every ``--save-every`` steps to ``out/separation/<mode>.pt`` (resumed with
``--resume``), the learning curve to ``out/separation/<mode>-curve.csv`` and the final weights to
``engines/weights/separator[_audio_only].pt``.

Loss: Looking to Listen's power-law compressed spectral loss (magnitude and complex terms on
|·|^0.3-compressed spectra), which weights quiet speech fairly and trains faster on a CPU than a
waveform loss. The audio-only model takes the minimum over the 3! assignments of its 3 masks to the
(zero-padded) sources: permutation-invariant training (Yu et al., 2017).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import time
from pathlib import Path

import numpy as np
import torch

from engines.separation.data import CACHE_DIR, MixtureSampler, build_cache, lips_at_stft_rate, load_units
from engines.separation.model import POWER, CausalSeparator, Checkpoint, SeparatorConfig, apply_mask

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
WEIGHTS = {"av": REPO / "engines" / "weights" / "separator.pt",
           "audio-only": REPO / "engines" / "weights" / "separator_audio_only.pt"}
RUN_DIR = REPO / "out" / "separation"
MAX_SPEAKERS = 3


def weights_path(mode: str) -> Path:
    return WEIGHTS[mode]


def torch_stft(x: torch.Tensor) -> torch.Tensor:
    """(B, N) → (B, T, F, 2): the frames of engines.dsp.stft (center=False, periodic Hann 400 in 512)."""
    spec = torch.stft(x, n_fft=512, hop_length=160, win_length=400, window=torch.hann_window(400),
                      center=False, return_complex=True)
    return torch.view_as_real(spec).transpose(1, 2).contiguous()


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


def step_loss(model: CausalSeparator, mode: str, batch: dict[str, np.ndarray]) -> torch.Tensor:
    """One batch's loss. AV: one row per (mixture, face). Audio-only: PIT over 3 masks."""
    mixture = torch_stft(torch.from_numpy(batch["mixture"]))  # (B, T, F, 2)
    b, t = mixture.shape[:2]
    targets = torch_stft(torch.from_numpy(batch["targets"]).flatten(0, 1)).view(b, MAX_SPEAKERS, t, -1, 2)
    if mode == "av":
        rows = [(i, k) for i in range(b) for k in range(int(batch["n_speakers"][i]))]
        mix_rows = mixture[[i for i, _ in rows]]
        lips = torch.from_numpy(lips_at_stft_rate(batch["lips"], t))[[i for i, _ in rows], [k for _, k in rows]]
        vis, gru = model.initial_state(len(rows))
        mask, _, _ = model(mix_rows, lips, vis, gru)
        estimate = apply_mask(mask[:, :, 0], mix_rows)
        return spectral_loss(estimate, targets[[i for i, _ in rows], [k for _, k in rows]]).mean()
    vis, gru = model.initial_state(b)
    mask, _, _ = model(mixture, torch.zeros(b, t, 0), vis, gru)  # (B, T, M, F, 2)
    estimates = apply_mask(mask, mixture.unsqueeze(2)).transpose(1, 2)  # (B, M, T, F, 2)
    losses = torch.stack([
        torch.stack([spectral_loss(estimates[:, m], targets[:, s]) for m, s in enumerate(perm)]).mean(0)
        for perm in itertools.permutations(range(MAX_SPEAKERS))
    ])  # (P, B)
    return losses.min(dim=0).values.mean()


def train(mode: str, minutes: float, max_steps: int, batch_size: int, lr: float, seed: int,
          resume: bool, save_every: int, threads: int, crop_s: float = 1.5, run_name: str = "",
          model_options: dict | None = None) -> Path:
    """Train one model. ``run_name`` marks an experiment: its files go to out/separation/<run_name>*
    and the shipped weights in engines/weights are left alone."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    voices, lips = load_units()
    shards = len(list(CACHE_DIR.glob("train-*.npz")))
    sampler = MixtureSampler(voices, lips, seed=seed, crop_s=crop_s)
    val = MixtureSampler(voices, lips, seed=seed + 12345).sample(16)  # fixed batch for the curve
    model = build_model(mode, **(model_options or {}))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    name = run_name or mode
    ckpt_path, curve_path = RUN_DIR / f"{name}.pt", RUN_DIR / f"{name}-curve.csv"
    step = 0
    if resume and ckpt_path.exists():
        raw = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(raw["state_dict"])
        optimiser.load_state_dict(raw["optimiser"])
        step = int(raw["step"])
    log.info("%s: %d face units, %d parameters, resuming at step %d", mode, len(voices),
             sum(p.numel() for p in model.parameters()), step)
    from tqdm import tqdm

    start, deadline = time.monotonic(), time.monotonic() + minutes * 60
    running = None
    bar = tqdm(total=max_steps, initial=step, desc=f"train {mode}", mininterval=5.0)
    with open(curve_path, "a", newline="") as f, bar:
        writer = csv.writer(f)
        if f.tell() == 0:
            writer.writerow(["step", "seconds", "train_loss", "val_loss"])
        while step < max_steps and time.monotonic() < deadline:
            if step % 200 == 0 and shards < len(list(CACHE_DIR.glob("train-*.npz"))):
                time.sleep(1.0)  # let a shard being written finish
                voices, lips = load_units()
                shards = len(list(CACHE_DIR.glob("train-*.npz")))  # the cache is still being built beside us: take new units
                sampler = MixtureSampler(voices, lips, seed=seed + step, crop_s=crop_s)
                log.info("%d face units at step %d", len(voices), step)
            model.train()
            loss = step_loss(model, mode, sampler.sample(batch_size))
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if step % save_every == 0:
                model.eval()
                with torch.no_grad():
                    val_loss = step_loss(model, mode, val).item()
                writer.writerow([step, round(time.monotonic() - start, 1), round(running, 5), round(val_loss, 5)])
                f.flush()
                torch.save({"state_dict": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step},
                           ckpt_path)
    info = {"mode": mode, "steps": step, "batch_size": batch_size, "lr": lr, "seed": seed,
            "face_units": int(len(voices)), "crop_s": crop_s, "train_minutes": round((time.monotonic() - start) / 60, 1),
            "final_train_loss": running}
    out = RUN_DIR / f"{run_name}-weights.pt" if run_name else weights_path(mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    Checkpoint(model.config, model.state_dict(), info).save(out)
    log.info("wrote %s (%s)", out, info)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch.py train-separator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("av", "audio-only"), default="av")
    p.add_argument("--build-cache", type=int, default=0, metavar="CLIPS",
                   help="render this many training clips into face units first (resumes; 0 = skip)")
    p.add_argument("--cache-workers", type=int, default=2)
    p.add_argument("--cache-minutes", type=float, default=None, help="stop starting new cache shards after this")
    p.add_argument("--minutes", type=float, default=20.0, help="training time box (0 = only build the cache)")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=6, help="mixtures per step (AV: one row per face)")
    p.add_argument("--crop-seconds", type=float, default=1.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--features", choices=("complex", "magnitude"), default="complex",
                   help="network input: compressed real/imag (shipped) or compressed magnitude")
    p.add_argument("--identity-init", action="store_true", help="start from mask = 1 instead of mask = 0")
    p.add_argument("--run-name", default="", help="an experiment: write to out/separation/<name>*, not engines/weights")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.build_cache:
        deadline = None if args.cache_minutes is None else args.cache_minutes * 60
        shards = build_cache(args.build_cache, args.cache_workers, deadline_s=deadline)
        log.info("%d cache shards in %s", shards, CACHE_DIR)
    if args.minutes > 0:
        train(args.mode, args.minutes, args.steps, args.batch_size, args.lr, args.seed, args.resume,
              args.save_every, args.threads, args.crop_seconds, args.run_name,
              {"features": args.features, "identity_init": args.identity_init})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
