"""Is the audio network the lever? Two causal audio-only separators trained the same way on the CPU.

    python -m lab.separation.audio_pretrain --run crn --arch crn --minutes 120      # add --resume to go on
    python -m lab.separation.audio_pretrain --run gru --arch gru --minutes 120
    python -m lab.separation.audio_pretrain --evaluate crn gru [--real]            # LibriSpeech test-other
    python -m lab.separation.audio_pretrain --run g_ft --pack out/speech_pack --device cuda \
        --init engines/weights/separator_audio_only.pt --one-voice 0.25 --batch-size 96 --lr 4e-4 --minutes 6.5
                                            # on a lent GPU (`lent_gpu.sh`): LibriSpeech + real VoxCeleb voices

Issue 16's audio path is weak (the audio-only variant of the shipped network, PIT, oracle assignment:
~4 dB on real pairs). This trains, with identical data, loss and time box, (a) that network — compressed
magnitude → 2-layer GRU 384 → complex masks (`engines.separation.separator_model`), from scratch — and
(b) a frequency-aware causal CRN (`crn_model.py`), and compares them on held-out speakers.

Data: LibriSpeech train-clean-100 (the shared 251 speakers), the last ``speech_pack.VALIDATION_SPEAKERS`` of them held
out for choosing the checkpoint; dynamic mixing every batch: two different speakers, 2 s crops, −5…+5 dB
relative level, recorded or procedural noise (train part) on half at 0–20 dB SNR, random overall level.
Loss: −SI-SDR of the two outputs under the better of the two assignments (uPIT). Test (``--evaluate``):
fixed 4 s two-speaker mixtures of LibriSpeech **test-other** speakers at 0 dB, clean and with the
evaluation part of the noise recordings at 10 dB SNR; SI-SDRi with the best assignment (audio-only
models cannot know which voice is whose). Needs ``../shared/data`` (or ``$EARSHOT_DATA``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engines.separation.separator_model import CausalSeparator, SeparatorConfig, apply_mask
from lab.corpus.noise import noise_clip
from lab.corpus.speech import EVAL, TRAIN
from engines.separation import crn_model
from lab.separation.speech_pack import speech, train_validation_speakers
from lab.separation.train_separator import learning_rate, neg_si_sdr, torch_istft, torch_stft

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / "out" / "separation" / "audio_pretrain"
RATE = 16000


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample crop with some speech in it (zero-padded when the utterance is short)."""
    if len(x) <= n:
        return np.pad(x, (0, n - len(x)))
    for _ in range(4):
        start = int(rng.integers(0, len(x) - n))
        y = x[start:start + n]
        if np.sqrt(np.mean(y ** 2)) > 0.3 * np.sqrt(np.mean(x ** 2)):
            break
    return y.copy()


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)) + 1e-9)


def mixture(pool: dict, n: int, rng: np.random.Generator, gain_db: float, noise_db: float | None,
            noise_split: str, voices: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two different speakers (the second ``gain_db`` re. the first), optional noise → (mixture, sources (2, n)).
    ``voices=1``: the second source is silence (one voice, the turn-taking case)."""
    a, b = rng.choice(sorted(pool), size=2, replace=False)
    s = [_crop(pool[k][int(rng.integers(len(pool[k])))], n, rng) for k in (a, b)]
    s = [x / _rms(x) for x in s]
    s[1] = s[1] * 10 ** (gain_db / 20) * (voices == 2)
    sources = np.stack(s).astype(np.float32)
    mix = sources.sum(0)
    if noise_db is not None:
        noise = noise_clip(noise_split, n, rng)
        mix = mix + noise / _rms(noise) * _rms(mix) * 10 ** (-noise_db / 20)
    level = 10 ** (rng.uniform(-30, -12) / 20) / max(float(np.abs(mix).max()), 1e-6)
    return (mix * level).astype(np.float32), sources * level


def batch(pool: dict, size: int, n: int, rng: np.random.Generator,
          one_voice: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``one_voice``: the share of mixtures with a single voice (the second source silent)."""
    items = [mixture(pool, n, rng, rng.uniform(-5, 5), rng.uniform(0, 20) if rng.random() < 0.5 else None, TRAIN,
                     1 if one_voice and rng.random() < one_voice else 2)
             for _ in range(size)]
    return torch.from_numpy(np.stack([m for m, _ in items])), torch.from_numpy(np.stack([s for _, s in items]))


def fixed_set(pool: dict, count: int, seconds: float, seed: int, noisy: bool, split: str):
    rng = np.random.default_rng(seed)
    return [mixture(pool, int(seconds * RATE), rng, 0.0, 10.0 if noisy else None, split) for _ in range(count)]


def one_voice_set(pool: dict, count: int, seconds: float, seed: int):
    """Fixed one-voice mixtures, noise on half (10 dB SNR)."""
    rng = np.random.default_rng(seed)
    return [mixture(pool, int(seconds * RATE), rng, 0.0, 10.0 if k % 2 else None, TRAIN, voices=1)
            for k in range(count)]


def build(arch: str, width: tuple[int, ...] | None = None, time_hidden: int | None = None,
          init: str | None = None) -> torch.nn.Module:
    """``init``: start from a CRN weights file (its config; its output gain back to 1, as trained)."""
    if init:
        ck = crn_model.load_checkpoint(Path(init))
        ck = replace(ck, config=replace(ck.config, output_gain=1.0))
        return ck.model().train()
    if arch == "crn":
        cfg = crn_model.CrnConfig()
        return crn_model.CrnSeparator(replace(cfg, channels=tuple(width or cfg.channels),
                                              time_hidden=time_hidden or cfg.time_hidden))
    if arch == "gru":
        return CausalSeparator(SeparatorConfig(lip_dim=0, n_masks=2))
    raise ValueError(f"--arch must be crn or gru, got {arch!r}")


def separate(model: torch.nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """(B, N) mixtures → (B, M, N) the model's M outputs, offline (one call, zero state)."""
    n = wave.shape[-1]
    spec = torch_stft(wave)
    b, t = spec.shape[:2]
    vis, state = (x.to(wave.device) for x in model.initial_state(b))  # both networks take the shipped call
    mask, _, _ = model(spec, spec.new_zeros(b, t, 0), vis, state)
    est = apply_mask(mask, spec.unsqueeze(2)).transpose(1, 2)  # (B, M, T, F, 2)
    return torch_istft(est.flatten(0, 1), n).view(b, est.shape[1], n)


def pit_si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(B, M ≥ 2, N) × (B, 2, N) → (B,) mean SI-SDR of the best assignment of two outputs to the two voices
    (M = 3 for the real-face trainer's audio-only runs)."""
    return torch.stack([-(neg_si_sdr(est[:, i], ref[:, 0]) + neg_si_sdr(est[:, j], ref[:, 1])) / 2
                        for i, j in itertools.permutations(range(est.shape[1]), 2)]).amax(0)


QUIET_FLOOR = 1e-3  # a silent output's loss stops at −30 dB re. the mixture


def quiet_db(est: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """(B, N) → (B,): an output's level re. the mixture in dB, floored at −30 dB (the loss of an output that
    should be silent: SI-SDR has no silent reference)."""
    return 10 * torch.log10(est.pow(2).sum(-1) / (mix.pow(2).sum(-1) + 1e-8) + QUIET_FLOOR)


def neg_snr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(B, N) → (B,): −SNR in dB, which (unlike SI-SDR) sees the level."""
    return -10 * torch.log10(ref.pow(2).sum(-1) / ((est - ref).pow(2).sum(-1) + 1e-8) + 1e-8)


def pit_loss(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """(B, 2, N) outputs, (B, 2, N) sources, (B, N) mixtures → (B,) loss under the better assignment: −SI-SDR
    per voice. Where the second source is silence (one voice): that output's `quiet_db`, and the voice's −SNR
    instead of −SI-SDR — with only the quiet term a network learns to turn every output down (a first run's
    voices came out 11.7 dB below their level in the mixture, `train_separator --calibrate`)."""
    silent = ref[:, 1].abs().sum(-1) == 0
    losses = []
    for i, j in ((0, 1), (1, 0)):
        first = torch.where(silent, neg_snr(est[:, i], ref[:, 0]), neg_si_sdr(est[:, i], ref[:, 0]))
        second = torch.where(silent, quiet_db(est[:, j], mix), neg_si_sdr(est[:, j], ref[:, 1]))
        losses.append((first + second) / 2)
    return torch.stack(losses).amin(0)


def one_voice_score(model: torch.nn.Module, items: list) -> dict[str, float]:
    """One voice in, two outputs: SI-SDR of the louder output vs the voice, and the other's level (dB re. mix)."""
    dev = _device_of(model)
    with torch.inference_mode():
        mix = torch.from_numpy(np.stack([m for m, _ in items])).to(dev)
        voice = torch.from_numpy(np.stack([s[0] for _, s in items])).to(dev)
        est = separate(model, mix)
    loud = est.pow(2).sum(-1).argmax(1)
    rows = torch.arange(len(items), device=dev)
    return {"voice_si_sdr": round(float(-neg_si_sdr(est[rows, loud], voice).mean()), 2),
            "other_db": round(float(quiet_db(est[rows, 1 - loud], mix).mean()), 2)}


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def score(model: torch.nn.Module, items: list) -> dict[str, float]:
    """Mean/median SI-SDRi (dB) over fixed mixtures, 8 at a time where they are of one length."""
    gains, dev = [], _device_of(model)
    same_length = len({len(m) for m, _ in items}) == 1
    step = 8 if same_length else 1
    with torch.inference_mode():
        for i in range(0, len(items), step):
            mix = torch.from_numpy(np.stack([m for m, _ in items[i:i + step]])).to(dev)
            ref = torch.from_numpy(np.stack([s for _, s in items[i:i + step]])).to(dev)
            base = pit_si_sdr(mix[:, None].expand(-1, 2, -1), ref)
            gains.append((pit_si_sdr(separate(model, mix), ref) - base).cpu().numpy())
    g = np.concatenate(gains)
    return {"si_sdri_mean": round(float(g.mean()), 2), "si_sdri_median": round(float(np.median(g)), 2), "n": len(g)}


def _data(args: argparse.Namespace, device: torch.device, seed: int):
    """→ (sample() → mixtures and sources on ``device``, held-out LibriSpeech speakers, real validation pairs —
    empty without a pack)."""
    if not args.pack:
        if args.speed or args.rooms:
            raise SystemExit("--speed and --rooms need --pack (the pack mixer makes them)")
        pool, held = train_validation_speakers()
        rng = np.random.default_rng(seed)

        def sample(size=None):
            mix, ref = batch(pool, size or args.batch_size, 2 * RATE, rng, args.one_voice)
            return mix.to(device), ref.to(device)
        return sample, held, []
    from lab.separation import speech_pack
    from lab.separation.pack_mixer import PackMixer

    pack = speech_pack.load(args.pack)
    mixer = PackMixer(pack["libri_train"], pack["vox_train"], pack["noise_train"], device, args.vox_share, seed,
                      args.speed, args.rooms)
    return (lambda size=None: mixer.batch(size or args.batch_size, 2 * RATE, args.one_voice),
            speech_pack.by_speaker(pack["libri_held"]), speech_pack.validation_pairs(pack["val_pairs"]))


def train(args: argparse.Namespace) -> None:
    """Time-boxed training (``args.minutes`` of compute), resumable. With ``--pack`` (a `speech_pack`) the data
    come from the pack, mixtures are made on ``--device`` (`pack_mixer`), and the checkpoint kept as best.pt is
    the best on the packed real validation pairs (the real voices the engine meets) rather than on held-out
    LibriSpeech speakers."""
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.enabled = not args.no_cudnn
    device = torch.device(args.device)
    out = RUN_DIR / args.run
    out.mkdir(parents=True, exist_ok=True)
    st = None
    if args.resume and (out / "state.pt").exists():
        st = torch.load(out / "state.pt", map_location=device, weights_only=False)
    step, elapsed, best = (st["step"], st["elapsed"], st["best"]) if st else (0, 0.0, -1e9)
    sample, held, real = _data(args, device, args.seed + step)  # a resumed run draws new mixtures
    validation = fixed_set(held, 48, 4.0, 1, False, TRAIN) + fixed_set(held, 16, 4.0, 2, True, TRAIN)
    alone = one_voice_set(held, 16, 4.0, 3)
    model = build(args.arch, args.channels, args.time_hidden, args.init).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if st:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    if args.profile_steps:
        profile(model, opt, sample, args.profile_steps, device, args.profile_batches)
        return
    total = args.minutes * 60
    bar = tqdm(total=int(total), initial=int(elapsed), unit="s", desc=args.run, mininterval=5)
    next_eval = elapsed + args.eval_minutes * 60
    curve = (out / "curve.csv").open("a", newline="")
    writer = csv.writer(curve)
    losses: list[float] = []
    while elapsed < total:
        t0 = time.monotonic()
        model.train()
        for g in opt.param_groups:
            g["lr"] = learning_rate(args.lr, elapsed, total)
        losses.append(train_step(model, opt, sample))
        step += 1
        elapsed += time.monotonic() - t0
        bar.update(int(elapsed) - bar.n)
        bar.set_postfix(step=step, loss=f"{np.mean(losses[-50:]):.2f}", refresh=False)
        if elapsed >= next_eval or elapsed >= total:
            model.eval()
            val = score(model, validation)["si_sdri_mean"]
            lone = one_voice_score(model, alone)
            real_val = score(model, real)["si_sdri_mean"] if real else None
            writer.writerow([step, round(elapsed), round(float(np.mean(losses[-200:])), 3), val,
                             lone["voice_si_sdr"], lone["other_db"]] + ([real_val] if real else []))
            curve.flush()
            chosen_on = real_val if real else val
            if chosen_on > best:
                best = chosen_on
                _save(model, args.arch, out / "best.pt", step, elapsed, val, real_val)
            _save(model, args.arch, out / "last.pt", step, elapsed, val, real_val)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                        "best": best}, out / "state.pt")
            log.info("%s step %d (%.1f min): train loss %.2f, validation SI-SDRi %.2f dB, real pairs %s (best %.2f); "
                     "one voice: %.1f dB SI-SDR, other output %.1f dB", args.run, step, elapsed / 60,
                     np.mean(losses[-200:]), val, real_val, best, lone["voice_si_sdr"], lone["other_db"])
            next_eval = elapsed + args.eval_minutes * 60
    bar.close()
    curve.close()


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sample) -> float:
    """One optimiser step on a fresh batch from ``sample()``; returns its loss."""
    mix, ref = sample()
    loss = pit_loss(separate(model, mix), ref, mix).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return float(loss.detach())


def profile(model: torch.nn.Module, opt: torch.optim.Optimizer, sample, steps: int, device: torch.device,
            sizes: tuple[int, ...] = ()) -> None:
    """Where a training step's time goes: ``steps`` steps after two warm-ups under torch.profiler, the top operators
    by device time (CPU time on the CPU) printed. ``sizes``: first, the time of a step (mixing included) at each of
    these batch sizes — if it hardly grows, the step waits on latency, not work. (Session 16, lent H200: 129 ms at
    batch 96, 486 ms at 384 — work; 53 % of it cuDNN's GRU backward element-wise kernel.)"""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    for size in sizes:
        for _ in range(2):
            train_step(model, opt, lambda: sample(size))
        sync()
        t0 = time.monotonic()
        for _ in range(steps):
            train_step(model, opt, lambda: sample(size))
        sync()
        per_step = (time.monotonic() - t0) / steps
        mixer_t0 = time.monotonic()
        for _ in range(steps):
            sample(size)
        sync()
        print(f"batch {size}: {per_step * 1000:.1f} ms per step ({size / per_step:.0f} mixtures/s), of which making "
              f"the mixtures {(time.monotonic() - mixer_t0) / steps * 1000:.1f} ms")
    for _ in range(2):
        train_step(model, opt, sample)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.monotonic()
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(model, opt, sample)
    print(f"{steps} steps, {(time.monotonic() - t0) / steps * 1000:.1f} ms per step (profiled)")
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60))


def _save(model: torch.nn.Module, arch: str, path: Path, step: int, elapsed: float, val: float,
          real_val: float | None = None) -> None:
    info = {"arch": arch, "step": step, "compute_minutes": round(elapsed / 60, 1), "validation_si_sdri": val,
            "device": str(_device_of(model))}
    if real_val is not None:
        info["real_validation_si_sdri"] = real_val
    crn_model.checkpoint(model, info).save(path)


def load_run(name: str) -> torch.nn.Module:
    """``RUN`` (its best.pt), ``RUN:last``, or a path to any separator checkpoint (``….pt``)."""
    if name.endswith(".pt"):
        return crn_model.load_checkpoint(Path(name)).model()
    run, _, which = name.partition(":")
    return crn_model.load_checkpoint(RUN_DIR / run / f"{which or 'best'}.pt").model()


def real_validation(models: dict[str, torch.nn.Module], pairs: int = 40) -> dict:
    """Does LibriSpeech training carry over to real interview audio? The real-face validation pairs of
    `lab.real_faces.train_separator` (id09 × id13, whole clips, 0 dB), each model's outputs given to the two
    people by the oracle assignment, as that module scores its audio-only runs."""
    from lab.real_faces.train_separator import evaluate_pairs, report_pairs

    chosen = report_pairs("validation", pairs=pairs)
    out = {}
    for name, model in models.items():
        r = evaluate_pairs(model, chosen)
        out[name] = {"si_sdri_mean": round(r["si_sdri"], 2), "si_sdri_median": round(r["si_sdri_median"], 2),
                     "faces": r["faces"]}
        print(name, "real validation pairs", json.dumps(out[name]))
    return out


def evaluate(runs: list[str], count: int, real: bool = False) -> dict:
    test = speech(EVAL)
    sets = {"test-other 0 dB": fixed_set(test, count, 4.0, 11, False, EVAL),
            "test-other 0 dB + noise 10 dB": fixed_set(test, count, 4.0, 12, True, EVAL)}
    _, held = train_validation_speakers()
    sets["validation 0 dB"] = fixed_set(held, 48, 4.0, 1, False, TRAIN)
    report, models = {}, {}
    for name in runs:
        models[name] = model = load_run(name)
        report[name] = {k: score(model, v) for k, v in sets.items()}
        print(name, json.dumps(report[name]))
    if real:
        for name, r in real_validation(models).items():
            report[name]["real validation pairs (oracle)"] = r
    return report


def plot(runs: list[str], path: Path) -> None:
    """Validation SI-SDRi against CPU minutes, one line per run (`media.charts`)."""
    import cv2

    from media.charts import line_chart

    series = {}
    for run in runs:
        rows = list(csv.reader((RUN_DIR / run / "curve.csv").open()))
        series[run] = ([float(r[1]) / 60 for r in rows], [float(r[3]) for r in rows])
    cv2.imwrite(str(path), line_chart("validation SI-SDRi (dB)", series, x_label="CPU minutes (one thread)"))


def _int_tuple(text: str) -> tuple[int, ...]:
    """A command-line list of integers, "24,48,64,96" → (24, 48, 64, 96)."""
    return tuple(int(c) for c in text.split(","))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run")
    p.add_argument("--arch", default="crn")
    p.add_argument("--minutes", type=float, default=120)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-minutes", type=float, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--one-voice", type=float, default=0.0,
                   help="share of training mixtures with one voice (the other output is trained to be silent)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a lent GPU (with --pack)")
    p.add_argument("--pack", type=Path, default=None,
                   help="train from a speech_pack folder (LibriSpeech + VoxCeleb training voices; mixtures made on "
                        "--device) instead of ../shared/data")
    p.add_argument("--vox-share", type=float, default=0.5, help="with --pack: share of sources from VoxCeleb")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="profile this many training steps (top operators by device time), then exit")
    p.add_argument("--profile-batches", type=_int_tuple, default=(),
                   help="with --profile-steps: first time a step at each of these batch sizes (e.g. 96,384)")
    p.add_argument("--no-cudnn", action="store_true",
                   help="PyTorch's own GRU and convolution kernels: cuDNN's GRU backward spent 53 %% of a lent H200's "
                        "step in one element-wise kernel (`--profile-steps`)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="with --pack: play each source 1 ± this times as fast (speed perturbation, e.g. 0.1)")
    p.add_argument("--rooms", type=float, default=0.0,
                   help="with --pack: the share of mixtures put in a simulated room (each source reverberant)")
    p.add_argument("--init", default=None, help="start from this CRN weights file (e.g. the shipped one)")
    p.add_argument("--channels", type=_int_tuple, default=None,
                   help="CRN encoder channels, e.g. 24,48,64,96 (default the shipped 16,32,48,64)")
    p.add_argument("--time-hidden", type=int, default=None, help="CRN time-GRU size (default 64)")
    p.add_argument("--evaluate", nargs="+", metavar="RUN[:last]")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--real", action="store_true", help="with --evaluate: also the real-face validation pairs")
    p.add_argument("--plot", nargs="+", metavar="RUN")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.plot:
        plot(args.plot, RUN_DIR / "curves.png")
        return 0
    if args.evaluate:
        report = evaluate(args.evaluate, args.count, args.real)
        (RUN_DIR / "report.json").write_text(json.dumps(report, indent=1))
        return 0
    if not args.run:
        p.error("--run NAME (or --evaluate RUN …)")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
