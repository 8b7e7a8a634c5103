"""`launch.py eval-separator`: the AV separator vs the audio-only baseline vs the mixture.

    python launch.py eval-separator                 # 20 clips per set, shipped weights
    python launch.py eval-separator --clips 100     # the full fixed sets
    python launch.py eval-separator --single-voice 5   # a lone voice should pass nearly unchanged
    python launch.py eval-separator --lip-check 6      # do the live lip features see the mouth?

Sets are the fixed held-out ones of `lab.corpus.evalset` (the 10 librispeech-test-other speakers,
never trained on): 2 and 3 speakers, with and without noise, 4 s clips. Needs ../shared/data.

Both models run through :class:`~engines.separation.streaming_separator.StreamingSeparator`, the engine the
live node runs (with two faces, the audio-only model's voices blended in as live), on the whole clip at once (the tests check that chunked streaming gives the same).
Lip features come from the live front end on the rendered frames; they are cached per clip under
``out/separation/eval-cache`` (deterministic, so the cache only saves time).

Metrics (torchmetrics): SI-SDR and SDR of each face's output against that face's clean voice, as
improvement over the mixture (SI-SDRi, SDRi). The AV model's output k *is* face k's voice, so a
"swap" is an output closer (by SI-SDR) to another face's voice than to its own. The audio-only model
cannot know faces: it gets its best assignment of outputs to voices (oracle permutation), which
favours it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from lab.corpus.evalset import EVAL_SETS
from engines.dsp import stft
from lab.separation.separation_samples import eval_clip, face_lip_streams, lips_at_stft_rate
from engines.separation.shipped_separator import AUDIO_ONLY_WEIGHTS, AV_WEIGHTS, load_checkpoint
from engines.separation.streaming_separator import StreamingSeparator, inverse
from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND, TwoVoiceBlend

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
EVAL_CACHE = REPO / "out" / "separation" / "eval-cache"
SETS = ("sep2-clean", "sep2-noisy", "sep3-clean", "sep3-noisy")


def load_eval_item(set_name: str, seed: int) -> dict[str, np.ndarray]:
    """Mixture, sources and per-face lip streams of one eval clip (cached after the first time)."""
    path = EVAL_CACHE / f"{set_name}-{seed}-mesh.npz"  # lips from the live (mesh + lip encoder) front end
    if path.exists():
        return dict(np.load(path))
    clip = eval_clip(set_name, seed)
    lips, found = face_lip_streams(clip)
    item = {"mixture": clip.mixture, "sources": clip.sources, "lips": lips, "found": np.float32(found)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **item)
    return item


def separate_av(model, mixture: np.ndarray, lips: np.ndarray, guide=None, blend: float = AUDIO_ONLY_BLEND) -> np.ndarray:
    """(N,) mixture, (K, Tv, D) lip streams → (K, N) one voice per face. ``guide``: the audio-only model whose two
    voices two faces take, as live (`TwoVoiceBlend`); None: the AV masks alone."""
    frames = stft(mixture)
    two_voices = None if guide is None or blend == 0 else TwoVoiceBlend.from_model(guide, blend)
    engine = StreamingSeparator.from_model(model, two_voices=two_voices)
    held = lips_at_stft_rate(lips, len(frames))
    ids, out = engine.push(frames, {k: held[k] for k in range(len(lips))})
    _, tail = engine.flush()
    return _fit(np.concatenate([out, tail], axis=1), len(mixture))


def separate_audio_only(model, mixture: np.ndarray) -> np.ndarray:
    """(N,) → (M, N): the audio-only model's M masks, each inverted."""
    frames = stft(mixture)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([frames.real, frames.imag], -1).astype(np.float32))[None]
        vis, gru = model.initial_state(1)
        mask, _, _ = model(x, torch.zeros(1, len(frames), 0), vis, gru)
    m = mask[0].numpy()  # (T, M, F, 2)
    outs = [inverse((m[:, j, :, 0] + 1j * m[:, j, :, 1]) * frames) for j in range(m.shape[1])]
    return _fit(np.stack(outs), len(mixture))


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((x.shape[0], n), np.float32)
    m = min(n, x.shape[1])
    out[:, :m] = x[:, :m]
    return out


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

    return scale_invariant_signal_distortion_ratio(torch.from_numpy(estimate).double(),
                                                   torch.from_numpy(reference).double()).numpy()


def sdr(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    from torchmetrics.functional.audio import signal_distortion_ratio

    return signal_distortion_ratio(torch.from_numpy(estimate).double(), torch.from_numpy(reference).double()).numpy()


def best_assignment(estimates: np.ndarray, references: np.ndarray) -> tuple[int, ...]:
    """Which estimate goes with each reference, maximising total SI-SDR (oracle permutation)."""
    k = len(references)
    score = np.array([[si_sdr(e, r) for r in references] for e in estimates])  # (M, K)
    best = max(itertools.permutations(range(len(estimates)), k), key=lambda p: sum(score[p[j], j] for j in range(k)))
    return tuple(best)


LEAK_FLOOR_DB = -60.0  # "silent enough": keeps one perfect face from swamping the mean


def silent_leak_db(output: np.ndarray, own: np.ndarray, mixture: np.ndarray, frame: int = 320) -> float | None:
    """Energy of a face's output relative to the mixture, over the 20 ms frames where that face is
    silent (own voice 40 dB below its loudest frame) while others speak (mixture within 30 dB of its
    loudest): "a silent face gets silence, not leakage". None if there are no such frames."""
    n = len(mixture) // frame * frame

    def energy(x: np.ndarray) -> np.ndarray:
        return (x[:n].reshape(-1, frame) ** 2).sum(1) + 1e-12

    e_own, e_mix, e_out = energy(own), energy(mixture), energy(output)
    quiet = (e_own < e_own.max() * 1e-4) & (e_mix > e_mix.max() * 1e-3)
    if not quiet.any():
        return None
    return max(LEAK_FLOOR_DB, float(10 * np.log10(e_out[quiet].sum() / e_mix[quiet].sum())))


def evaluate_set(set_name: str, clips: int, av_model, ao_model, blend: float = AUDIO_ONLY_BLEND) -> dict[str, float]:
    rows: dict[str, list[float]] = {k: [] for k in ("mix_si", "av_si", "ao_si", "mix_sdr", "av_sdr", "ao_sdr")}
    swaps, clip_swaps, found, leaks = 0, 0, [], []
    seeds = list(EVAL_SETS[set_name].seeds())[:clips]
    for seed in seeds:
        item = load_eval_item(set_name, seed)
        mixture, refs = item["mixture"], item["sources"]
        keep = np.abs(refs).max(axis=1) > 1e-4  # a face with no speech in the clip has no SI-SDR
        mix = np.repeat(mixture[None], len(refs), 0)
        found.append(float(item["found"]))
        av = separate_av(av_model, mixture, item["lips"], ao_model, blend)
        ao_all = separate_audio_only(ao_model, mixture)
        ao = ao_all[list(best_assignment(ao_all, refs[keep]))]
        rows["mix_si"] += si_sdr(mix[keep], refs[keep]).tolist()
        rows["av_si"] += si_sdr(av[keep], refs[keep]).tolist()
        rows["ao_si"] += si_sdr(ao, refs[keep]).tolist()
        rows["mix_sdr"] += sdr(mix[keep], refs[keep]).tolist()
        rows["av_sdr"] += sdr(av[keep], refs[keep]).tolist()
        rows["ao_sdr"] += sdr(ao, refs[keep]).tolist()
        own = np.flatnonzero(keep)
        leaks += [x for x in (silent_leak_db(av[i], refs[i], mixture) for i in own) if x is not None]
        scores = np.array([[si_sdr(av[i], refs[j]) for j in own] for i in own])
        wrong = int(np.sum(np.argmax(scores, axis=1) != np.arange(len(own))))
        swaps += wrong
        clip_swaps += wrong > 0
    r = {k: np.array(v) for k, v in rows.items()}
    n_faces = len(r["mix_si"])
    return {
        "set": set_name, "clips": len(seeds), "voices": n_faces, "faces_found": float(np.mean(found)),
        "mixture_si_sdr": float(r["mix_si"].mean()),
        "av_si_sdri": float((r["av_si"] - r["mix_si"]).mean()), "ao_si_sdri": float((r["ao_si"] - r["mix_si"]).mean()),
        "av_sdri": float((r["av_sdr"] - r["mix_sdr"]).mean()), "ao_sdri": float((r["ao_sdr"] - r["mix_sdr"]).mean()),
        "av_swap_rate": swaps / max(1, n_faces), "av_clips_with_swap": clip_swaps / max(1, len(seeds)),
        "av_silent_leak_db": float(np.mean(leaks)) if leaks else float("nan"), "silent_stretches": len(leaks),
    }


def format_table(results: list[dict]) -> str:
    head = (f"{'set':<11} {'clips':>5} {'voices':>6} {'found':>6} {'mix SI-SDR':>10} | {'SI-SDRi AV':>10} "
            f"{'AO(PIT)':>8} | {'SDRi AV':>8} {'AO(PIT)':>8} | {'swaps':>6} {'silent leak':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['set']:<11} {r['clips']:>5} {r['voices']:>6} {r['faces_found']:>6.2f} "
                     f"{r['mixture_si_sdr']:>10.2f} | {r['av_si_sdri']:>10.2f} {r['ao_si_sdri']:>8.2f} | "
                     f"{r['av_sdri']:>8.2f} {r['ao_sdri']:>8.2f} | {r['av_swap_rate']:>6.1%} {r['av_silent_leak_db']:>11.1f}")
    lines.append("dB; mixture row = SI-SDRi/SDRi 0 by definition. found = share of face-frames the live front "
                 "end detected. swaps = AV outputs closer to another face's voice than to their own. silent leak = "
                 "AV output energy vs the mixture's while that face is silent and others speak (dB; 0 = all leaks).")
    return "\n".join(lines)


def lip_check(clips: int) -> str:
    """How much the live lip features know about the mouth: Pearson r of each feature with the
    generator's mouth opening (the renderer's own parameter, used here as a check only, never as a
    model input) over visible face-frames of ``clips`` fresh clips (seeds no training run used)."""
    from lab.corpus.generate import make_clip
    from engines.faces.lip_features import FEATURE_NAMES
    from lab.separation.separation_samples import train_config

    feats, opening = [], []
    for seed in range(900_000_000, 900_000_000 + clips):
        clip = make_clip("separation", seed, train_config())
        lips, _ = face_lip_streams(clip)
        for k in range(len(lips)):
            visible = lips[k, :, -1] > 0
            feats.append(lips[k][visible])
            opening.append(clip.mouth[visible, k, 0])
    f, m = np.concatenate(feats), np.concatenate(opening)
    r = {name: float(np.corrcoef(f[:, i], m)[0, 1]) for i, name in enumerate(FEATURE_NAMES[:-1])}
    fit = np.linalg.lstsq(np.c_[f[:, :-1], np.ones(len(f))], m, rcond=None)[0]
    joint = float(np.corrcoef(np.c_[f[:, :-1], np.ones(len(f))] @ fit, m)[0, 1])
    return (f"lip features vs mouth opening ({len(m)} visible face-frames, {clips} clips): "
            + ", ".join(f"{k} {v:+.2f}" for k, v in r.items()) + f"; linear fit of all: r = {joint:.2f}")


def single_voice_check(clips: int, av_model) -> str:
    """One held-out speaker, one face, no noise: how much the AV output differs from the input
    (SI-SDR of output vs input; a separator should leave a lone voice alone)."""
    from dataclasses import replace

    from lab.corpus.evalset import EVAL_SEED_BASE
    from lab.corpus.generate import make_clip

    config = replace(EVAL_SETS["sep2-clean"].config, num_speakers=(1,), noise_prob=0.0)
    scores = []
    for seed in range(EVAL_SEED_BASE + 60_000, EVAL_SEED_BASE + 60_000 + clips):
        clip = make_clip("separation", seed, config)
        lips, _ = face_lip_streams(clip)
        out = separate_av(av_model, clip.mixture, lips)
        scores.append(float(si_sdr(out, clip.mixture[None])[0]))
    return (f"single voice ({clips} clips of test-other speakers): output vs input SI-SDR "
            f"mean {np.mean(scores):.1f} dB, min {np.min(scores):.1f} dB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch.py eval-separator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=20, help="clips per set (the sets hold 100)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=[s for s in EVAL_SETS if s.startswith("sep")])
    p.add_argument("--av-weights", type=Path, default=AV_WEIGHTS)
    p.add_argument("--ao-weights", type=Path, default=AUDIO_ONLY_WEIGHTS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blend", type=float, default=AUDIO_ONLY_BLEND,
                   help="two faces: the audio-only voices' share of their masks, as live (0: the AV masks alone)")
    p.add_argument("--lip-check", type=int, default=0, metavar="CLIPS",
                   help="instead: correlate the live lip features with the generator's mouth opening")
    p.add_argument("--single-voice", type=int, default=0, metavar="CLIPS",
                   help="instead: check that a lone voice passes through nearly unchanged")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.lip_check:
        print(lip_check(args.lip_check))
        return 0
    av_model = load_checkpoint(args.av_weights).model()
    if args.single_voice:
        print(single_voice_check(args.single_voice, av_model))
        return 0
    ao_model = load_checkpoint(args.ao_weights).model()
    results = []
    for name in args.sets:
        results.append(evaluate_set(name, args.clips, av_model, ao_model, args.blend))
        log.info("%s", results[-1])
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
