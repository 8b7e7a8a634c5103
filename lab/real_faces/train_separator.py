"""Stage 3 of issue 16: the causal AV separator trained on real faces, conditioned on the learned lip
embedding of stage 2.

    python -m lab.real_faces.train_separator --run av --minutes 240               # train (add --resume to go on)
    python -m lab.real_faces.train_separator --run ao --mode audio-only --minutes 240   # same size, no face
    python -m lab.real_faces.train_separator --evaluate av [ao]                   # test pairs (held-out ids)
    python -m lab.real_faces.train_separator --calibrate av_crn                   # a CRN's output gain (validation)

Model: `engines.separation.separator_model.CausalSeparator` (the shipped causal "Looking to Listen":
compressed magnitude → GRU → bounded complex ratio mask, faces as the batch) with ``lip_dim`` = the lip
encoder's embedding size (64). Its audio path and head start from the shipped separator's weights (the audio-only run from the shipped
audio-only baseline's) (trained
for 10 GPU-minutes on speech separation; same shapes), the visual branch from scratch (``--init``).
The lip encoder is frozen: its embeddings are computed once per clip (offline = streaming, see
`engines/faces/lip_encoder.py`) and held at the STFT rate as the live node holds lip features.

Data (`real_mixtures.RealMixtureSampler`): targets are VoxCeleb clips of `TRAIN_IDS`, interferers other
training identities' clips (face on screen 75 %) and LibriSpeech train-clean-100 speakers, noise (train part
of the shared recordings or procedural) on half, dynamic mixing every batch, 2 s crops. Validation =
fixed pairs of `VALIDATION_IDS` clips at 0 dB (the checkpoint kept is the best there); the report uses
`TEST_IDS` pairs only.

Loss (AV): negative SI-SDR of each face's ISTFT output against its own scaled audio, plus the compressed
spectral loss (weight ``--spectral``) that keeps a mask that starts at 1 from stalling. Audio-only: 3 masks,
permutation-invariant (the same losses, min over the 3! assignments; absent sources are silence, scored
by the spectral term only).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from engines.dsp import stft
from engines.faces.lip_encoder import LipEncoderCheckpoint
from engines.separation.separator_model import CausalSeparator, Checkpoint, SeparatorConfig, apply_mask
from engines.separation.shipped_separator import AUDIO_ONLY_WEIGHTS, AV_WEIGHTS
from engines.separation.streaming_separator import FACE_COMPETITION, StreamingSeparator, inverse
from engines.separation.crn_model import CrnConfig, CrnSeparator, checkpoint, load_checkpoint
from engines.separation.two_voice_blend import ASSIGN_MEMORY_FRAMES, AUDIO_ONLY_BLEND, TwoVoiceBlend
from lab.real_faces.face_tracks import REPO, TEST_IDS, TRAIN_IDS, VALIDATION_IDS, require_data
from lab.real_faces.real_data import load_clips
from lab.real_faces.real_mixtures import FaceUnit, RealMixtureSampler, eval_pairs, pair_mixture, speech_crop
from lab.separation.separation_samples import lips_at_stft_rate
from lab.separation.train_separator import learning_rate, neg_si_sdr, spectral_loss, torch_istft, torch_stft

log = logging.getLogger(__name__)
RUN_DIR = REPO / "out" / "real_faces" / "separator"
#: the shipped lip encoder (stage 2's chosen run, `out/real_faces/sync/reg/best.pt`, copied there), so a fresh clone
#: evaluates with what the engine runs
SYNC_WEIGHTS = REPO / "engines" / "weights" / "lip_encoder.pt"


def face_units(identities, encoder_path: Path = SYNC_WEIGHTS) -> list[FaceUnit]:
    """Every cached clip of ``identities`` with its visual embedding from the (frozen) lip encoder."""
    encoder = LipEncoderCheckpoint.load(encoder_path).model()
    units = []
    for c in load_clips(identities, with_mel=False):
        with torch.no_grad():
            emb, _ = encoder(torch.from_numpy(c.crops[None].astype(np.float32)), torch.from_numpy(c.lips[None]),
                             encoder.initial_state(1))
        units.append(FaceUnit(c.identity, c.name, c.audio, emb[0].numpy()))
    return units


def librispeech_train() -> list[np.ndarray]:
    from lab.corpus.speech import TRAIN, _load_flac, speakers

    return [_load_flac(f) for s in speakers(TRAIN, include_espeak=False) for f in s.files]


def train_noise(speech: list[np.ndarray] | None = None, babble: float = 0.0):
    """Noise for training mixtures: a crop of a recording's train part or procedural noise; with probability
    ``babble`` a crowd instead — 4 to 8 LibriSpeech training talkers at once (a restaurant's background is
    voices, which the recordings lack)."""
    from lab.corpus.noise import noise_clip
    from lab.corpus.speech import TRAIN

    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        if speech and rng.random() < babble:
            return sum(speech_crop(speech, n, rng) * rng.uniform(0.5, 1.0) for _ in range(int(rng.integers(4, 9))))
        return noise_clip(TRAIN, n, rng)

    return draw


#: a muted face's output is pushed down to this level re. the speaking face's output and no further (dB): below
#: it, the loss would only chase silence at the expense of the faces that speak
SILENT_FLOOR_DB = -30.0


def compete_rows(mask: torch.Tensor, row_mixture: torch.Tensor, exponent: float) -> torch.Tensor:
    """`engines.separation.streaming_separator.compete` in training: rows (faces) of the same mixture share each
    bin by their mask power, so the network learns with the rule it runs under. mask (R, T, F, 2)."""
    if not exponent:
        return mask
    power = mask.pow(2).sum(-1)  # (R, T, F)
    total = power.new_zeros((int(row_mixture.max()) + 1, *power.shape[1:])).index_add(0, row_mixture, power)
    share = power / total[row_mixture].clamp_min(1e-12)
    return mask * (share + 1e-6).pow(exponent / 2).unsqueeze(-1)  # (+1e-6: a bounded gradient where share → 0)


def step_loss(model: CausalSeparator, mode: str, batch: dict, spectral_weight: float,
              competition: float = 0.0) -> torch.Tensor:
    wave = torch.from_numpy(batch["mixture"])
    n = wave.shape[-1]
    mixture = torch_stft(wave)
    b, t = mixture.shape[:2]
    sources = torch.from_numpy(batch["sources"])  # (B, 3, N)
    if mode == "av":
        rm, rs = torch.from_numpy(batch["row_mixture"]), torch.from_numpy(batch["row_source"])
        mix_rows = mixture[rm]
        lips = torch.from_numpy(lips_at_stft_rate(batch["row_emb"], t))
        vis, gru = model.initial_state(len(rm))
        mask, _, _ = model(mix_rows, lips, vis, gru)
        est = apply_mask(compete_rows(mask[:, :, 0], rm, competition), mix_rows)
        heard = rs >= 0
        ref = sources[rm[heard], rs[heard]]
        per_row = est.new_zeros(len(rm))
        per_row[heard] = neg_si_sdr(torch_istft(est[heard], n), ref)
        if spectral_weight:
            per_row[heard] = per_row[heard] + spectral_weight * spectral_loss(est[heard], torch_stft(ref))
        if not heard.all():
            # a muted face: its output's level re. the output of the face that speaks in the same mixture (dB,
            # down to SILENT_FLOOR_DB). Re. the mixture instead, the network learned to turn every output down
            # (a first run: the faces' voices −12 → −22 dB in 20 minutes, which SI-SDR cannot see)
            quiet = (~heard).nonzero().squeeze(1)
            speaker = {int(m): i for i, (m, r) in enumerate(zip(rm.tolist(), rs.tolist())) if r == 0}
            talking = torch.tensor([speaker[int(rm[q])] for q in quiet])
            power = est.pow(2).sum((1, 2, 3))
            per_row[quiet] = (10 * torch.log10((power[quiet] + 1e-8) / (power[talking] + 1e-8))).clamp_min(SILENT_FLOOR_DB)
        return per_row.mean()
    vis, gru = model.initial_state(b)
    mask, _, _ = model(mixture, mixture.new_zeros(b, t, 0), vis, gru)  # (B, T, M, F, 2)
    est = apply_mask(mask, mixture.unsqueeze(2)).transpose(1, 2)  # (B, M, T, F, 2)
    refs = torch_stft(sources.flatten(0, 1)).view(b, 3, t, -1, 2)
    waves = torch_istft(est.flatten(0, 1), n).view(b, 3, n)
    active = (sources.abs().amax(-1) > 1e-4).float()  # (B, 3)
    per = {}
    for m, s in itertools.product(range(3), range(3)):
        sd = neg_si_sdr(waves[:, m], sources[:, s]) * active[:, s]
        per[m, s] = sd + spectral_weight * spectral_loss(est[:, m], refs[:, s])
    losses = torch.stack([sum(per[m, s] for m, s in enumerate(p)) / 3 for p in itertools.permutations(range(3))])
    return losses.min(0).values.mean()


def build_model(mode: str, emb_dim: int, init: Path | None, hidden: int, arch: str = "gru"):
    """The GRU network (``arch="gru"``, shipped until session 11) or the frequency-aware CRN (``"crn"``,
    `engines.separation.crn_model`, shipped since), its matching tensors started from ``init`` where given."""
    if arch == "crn":
        model = CrnSeparator(CrnConfig(n_masks=1 if mode == "av" else 3, lip_dim=emb_dim if mode == "av" else 0))
        if init is not None and init.exists():
            copied = widen_crn_audio_only(load_checkpoint(init).state_dict, model)
            log.info("initialised %d/%d tensors from %s", len(copied), len(model.state_dict()), init)
        return model
    cfg = SeparatorConfig(lip_dim=emb_dim if mode == "av" else 0, n_masks=1 if mode == "av" else 3, hidden=hidden)
    model = CausalSeparator(cfg)
    if init is not None and init.exists():
        src = Checkpoint.load(init).state_dict
        own = model.state_dict()
        copied = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
        own.update({k: src[k].float() for k in copied})
        if mode == "av" and cfg.lip_dim:
            copied += widen_audio_only(src, own, cfg)
        model.load_state_dict(own)
        log.info("initialised %d/%d tensors from %s (%s left fresh)", len(copied), len(own), init,
                 sorted(set(own) - set(copied)))
    return model


def widen_audio_only(src: dict, own: dict, cfg: SeparatorConfig) -> list[str]:
    """Start an AV model from an audio-only one of the same size (``--init`` an ``--mode audio-only`` run):
    the GRU's first layer gets the audio columns, its visual columns start at zero (so at first the face
    changes nothing and the output is the audio-only model's first mask), and the head keeps the first of
    the audio-only model's masks. Names of the tensors so filled."""
    done = []
    key = "gru.weight_ih_l0"
    if key in src and key in own and src[key].shape[1] == cfg.audio_dim and own[key].shape[1] == cfg.audio_dim + cfg.visual_dim:
        own[key] = torch.cat([src[key].float(), torch.zeros(src[key].shape[0], cfg.visual_dim)], dim=1)
        done.append(key)
    for key in ("head.2.weight", "head.2.bias"):
        if key in src and key in own and src[key].shape[0] % own[key].shape[0] == 0 and src[key].shape[0] > own[key].shape[0]:
            own[key] = src[key].float()[: own[key].shape[0]].clone()  # rows are (mask, freq, re/im): mask 0's
            done.append(key)
    return done


def widen_crn_audio_only(src: dict, model: CrnSeparator) -> list[str]:
    """Start an AV CRN from an audio-only one: every shared tensor, the head cut to the first mask's two
    channels (real, imaginary). The face's projections start at zero (see the class), so at first the AV
    model gives the audio-only model's first output. Names of the tensors filled."""
    own = model.state_dict()
    done = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
    own.update({k: src[k].float() for k in done})
    head = f"decoder.{len(model.decoder) - 1}.0"
    for key, dim in ((f"{head}.weight", 1), (f"{head}.bias", 0)):
        if key in src and key not in done:
            own[key] = src[key].float().narrow(dim, 0, own[key].shape[dim]).clone()
            done.append(key)
    model.load_state_dict(own)
    return done


def separate(model: CausalSeparator, mixture: np.ndarray, embs: list[np.ndarray],
             competition: float = FACE_COMPETITION, guide: CrnSeparator | None = None,
             blend: float = AUDIO_ONLY_BLEND, two_voices: TwoVoiceBlend | None = None,
             memory_frames: float = ASSIGN_MEMORY_FRAMES) -> np.ndarray:
    """(N,) and one (Tv, E) embedding per face → (K, N): the live engine's path, whole clip at once (the faces
    competing for each bin as live, `FACE_COMPETITION`; with an audio-only ``guide``, two faces take its voices,
    `TwoVoiceBlend`, or ``two_voices`` as given: a probe's). Audio-only: its outputs."""
    frames = stft(mixture)
    if model.config.lip_dim:
        if two_voices is None and guide is not None:
            two_voices = TwoVoiceBlend.from_model(guide, blend, memory_frames)
        engine = StreamingSeparator.from_model(model, competition=competition, two_voices=two_voices)
        held = lips_at_stft_rate(np.stack(embs), len(frames))
        _, out = engine.push(frames, {k: held[k] for k in range(len(embs))})
        _, tail = engine.flush()
        out = np.concatenate([out, tail], axis=1)
    else:
        with torch.inference_mode():
            x = torch.from_numpy(np.stack([frames.real, frames.imag], -1).astype(np.float32))[None]
            vis, gru = model.initial_state(1)
            mask, _, _ = model(x, torch.zeros(1, len(frames), 0), vis, gru)
        m = mask[0].numpy()
        out = np.stack([inverse((m[:, j, :, 0] + 1j * m[:, j, :, 1]) * frames) for j in range(m.shape[1])])
    fit = np.zeros((len(out), len(mixture)), np.float32)
    k = min(len(mixture), out.shape[1])
    fit[:, :k] = out[:, :k]
    return fit


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref + 1e-12) * ref
    return float(10 * np.log10((target @ target + 1e-12) / ((est - target) @ (est - target) + 1e-12)))


def voice_gain_db(est: np.ndarray, ref: np.ndarray) -> float:
    """How loud the face's own voice comes out of the separator, in dB re. its level in the mixture: the gain of
    ``ref``'s projection in ``est`` (0 dB: kept at its own level). SI-SDR cannot see it (it is scale-invariant);
    a user hears it: a separator that shrinks what it is unsure of hands back "the mixture turned down"."""
    n = min(len(est), len(ref))
    g = float(np.dot(est[:n], ref[:n]) / (np.dot(ref[:n], ref[:n]) + 1e-12))
    return 20 * np.log10(max(abs(g), 1e-6))


def sync_embedding(audio_model, wave: np.ndarray, frames: int) -> np.ndarray:
    """(frames, E) stage-2 audio embedding of a waveform (the sync model's audio side)."""
    from lab.real_faces.real_data import RealClip, log_mel
    from lab.real_faces.train_sync import audio_embed_clip

    clip = RealClip("", "", np.zeros((frames, 1, 1), np.uint8), np.zeros((frames, 1), np.float32),
                    np.ones(frames, bool), wave, log_mel(wave, frames))
    return audio_embed_clip(audio_model, clip)


SYNC_LAG_FRAMES = 4  # the sync audio encoder looks ~0.15 s ahead: a causal decision at frame t uses frames ≤ t − 4
SYNC_MIN_FRAMES = 25  # first decision after 1 s of evidence (validation: 12 or 25 frames, margin 0–0.15 tried)
SYNC_SWITCH_MARGIN = 0.0  # a later switch must beat the current choice by this much (sum of mean cosines)


def assign_by_sync(outputs: np.ndarray, embs: list[np.ndarray], audio_model, causal: bool) -> np.ndarray:
    """Separate-then-assign: give each face the audio-only output whose sound is in sync with its lips.

    Score of (face k, output m) = mean per-frame cosine of the face's lip embedding and the output's sync
    audio embedding (stage 2). ``causal``: decided anew at every video frame from the frames so far (lagged
    by `SYNC_LAG_FRAMES`), the output assembled frame by frame; else one choice from the whole clip."""
    frames = len(embs[0])
    def unit(x):
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)
    aud = np.stack([unit(sync_embedding(audio_model, o[:frames * 640], frames)) for o in outputs])  # (M, T, E)
    cos = np.einsum("kte,mte->kmt", np.stack([unit(e) for e in embs]), aud)  # (K, M, T)
    perms = list(itertools.permutations(range(len(outputs)), len(embs)))

    def best(score: np.ndarray) -> tuple[int, ...]:
        return max(perms, key=lambda p: sum(score[k, m] for k, m in enumerate(p)))

    if not causal:
        choice = best(cos.mean(-1))
        return outputs[list(choice)]
    cum = np.cumsum(cos, axis=-1)
    out = np.zeros((len(embs), outputs.shape[1]), np.float32)
    choice = None  # until the first decision every face gets the sum of the outputs (≈ the mixture)
    for t in range(frames):
        seen = t - SYNC_LAG_FRAMES
        if seen + 1 >= SYNC_MIN_FRAMES:
            score = cum[:, :, seen] / (seen + 1)
            new = best(score)
            gain = sum(score[k, m] for k, m in enumerate(new)) - (
                sum(score[k, m] for k, m in enumerate(choice)) if choice else -np.inf)
            if gain > SYNC_SWITCH_MARGIN:  # hysteresis: a patchwork of outputs costs more than a late switch
                choice = new
        end = outputs.shape[1] if t == frames - 1 else (t + 1) * 640
        for k in range(len(embs)):
            out[k, t * 640:end] = outputs[:, t * 640:end].sum(0) if choice is None else outputs[choice[k], t * 640:end]
    return out


def evaluate_pairs(model: CausalSeparator, pairs, extra=None, noise=None, extra_db: float = -5.0,
                   snr_db: float = 10.0, assign: str = "oracle", audio_model=None,
                   competition: float = FACE_COMPETITION, guide: CrnSeparator | None = None,
                   blend: float = AUDIO_ONLY_BLEND, memory_frames: float = ASSIGN_MEMORY_FRAMES) -> dict:
    """SI-SDRi per face: AV output k is face k's (no permutation). Audio-only: ``assign`` = "oracle" (its
    best assignment, favours it), "sync" (`assign_by_sync`, causal) or "sync-clip" (whole-clip choice).
    ``extra``/``noise``: per pair an off-screen talker (at ``extra_db`` re. each face) / noise (at ``snr_db``
    re. the speech), or None. ``guide``/``blend``: the engine's two-voice blend (`separate`)."""
    model.eval()
    rows, swaps = [], 0
    for i, pair in enumerate(pairs):
        mix, refs = pair_mixture(pair, None if extra is None else extra[i], None if noise is None else noise[i],
                                 extra_db, snr_db)
        out = separate(model, mix, [pair[0].emb, pair[1].emb], competition, guide, blend,
                       memory_frames=memory_frames)
        if not model.config.lip_dim and assign == "oracle":  # the 3 outputs' best assignment to the 2 faces
            score = np.array([[si_sdr(o, r) for r in refs] for o in out])
            best = max(itertools.permutations(range(len(out)), 2), key=lambda p: score[p[0], 0] + score[p[1], 1])
            out = out[list(best)]
        elif not model.config.lip_dim:
            out = assign_by_sync(out, [pair[0].emb, pair[1].emb], audio_model, causal=assign == "sync")
        for k in range(2):
            own, other = si_sdr(out[k], refs[k]), si_sdr(out[k], refs[1 - k])
            rows.append({"identity": pair[k].identity, "clip": pair[k].name, "mixture": si_sdr(mix, refs[k]),
                         "output": own, "si_sdri": own - si_sdr(mix, refs[k]), "gain_db": voice_gain_db(out[k], refs[k])})
            swaps += other > own
    imp = np.array([r["si_sdri"] for r in rows])
    out = {"pairs": len(pairs), "faces": len(rows), "si_sdri": float(imp.mean()), "si_sdri_median": float(np.median(imp)),
           "mixture_si_sdr": float(np.mean([r["mixture"] for r in rows])), "swap_rate": swaps / len(rows),
           "voice_gain_db": float(np.median([r["gain_db"] for r in rows]))}
    for ident in sorted({r["identity"] for r in rows}):
        out[f"si_sdri_{ident}"] = float(np.mean([r["si_sdri"] for r in rows if r["identity"] == ident]))
    return out


def evaluate_long_streams(model: CausalSeparator, pairs, competition: float = FACE_COMPETITION,
                          guide: CrnSeparator | None = None, blend: float = AUDIO_ONLY_BLEND, per_stream: int = 8,
                          memory_frames: float = ASSIGN_MEMORY_FRAMES) -> dict:
    """The report's pairs played back to back, ``per_stream`` to a stream (~40 s: one conversation of the same two
    people, face 0 always the first identity), through one engine whose state carries across the clips: the
    figure a per-clip evaluation cannot see — whether what the engine carries (the two-voice blend's assignment
    evidence, the networks' states) follows a conversation or goes stale. SI-SDRi per face and clip, as
    `evaluate_pairs` scores them."""
    model.eval()
    rows, swaps = [], 0
    for start in range(0, len(pairs) - per_stream + 1, per_stream):
        group = pairs[start:start + per_stream]
        parts = [pair_mixture(p) for p in group]
        mix = np.concatenate([m for m, _ in parts])
        embs = [np.concatenate([p[k].emb for p in group]) for k in range(2)]
        out = separate(model, mix, embs, competition, guide, blend, memory_frames=memory_frames)
        at = 0
        for m, refs in parts:
            for k in range(2):
                seg = out[k, at:at + len(m)]
                own, other = si_sdr(seg, refs[k]), si_sdr(seg, refs[1 - k])
                rows.append(own - si_sdr(m, refs[k]))
                swaps += other > own
            at += len(m)
    imp = np.array(rows)
    return {"streams": len(pairs) // per_stream, "clips_per_stream": per_stream, "faces": len(rows),
            "si_sdri": float(imp.mean()), "si_sdri_median": float(np.median(imp)), "swap_rate": swaps / max(len(rows), 1)}


def evaluate_silent_face(model: CausalSeparator, pairs, competition: float = FACE_COMPETITION,
                         guide: CrnSeparator | None = None, blend: float = AUDIO_ONLY_BLEND,
                         memory_frames: float = ASSIGN_MEMORY_FRAMES) -> dict:
    """Two faces on screen, one of them speaking: the mixture is one face's voice alone, the other face's lips
    move to speech we do not hear (its own clip, muted): a talker beside someone mouthing, the hard case of a
    listener. Per pair, both ways round. Figures: how loud the silent face's output is re. the mixture (its
    "leak", median dB; a separator that hands both faces the voice is near 0), the speaker's output quality
    (SI-SDR vs the voice) and level, and the share of 1 s speech windows where the speaker's output is the
    louder of the two (what a "who speaks" reading of the outputs would get right). ``silent_vs_speaker_db``
    (median) compares the two outputs directly, so the output gain does not move it."""
    def power(x: np.ndarray) -> float:
        return float(np.mean(np.square(x))) + 1e-12

    window = 16000  # 1 s
    model.eval()
    leaks, quality, levels, versus, right, windows = [], [], [], [], 0, 0
    for a, b in pairs:
        for speaker, silent in ((a, b), (b, a)):
            mix = speaker.audio.astype(np.float64)
            out = separate(model, mix, [speaker.emb, silent.emb], competition, guide, blend,
                           memory_frames=memory_frames)
            leaks.append(10 * np.log10(power(out[1]) / power(mix)))
            quality.append(si_sdr(out[0], mix))
            levels.append(voice_gain_db(out[0], mix))
            versus.append(10 * np.log10(power(out[1]) / power(out[0])))
            for s in range(0, len(mix) - window + 1, window):
                if np.sqrt(np.mean(mix[s:s + window] ** 2)) < 1e-3:
                    continue  # a pause: nobody speaks
                windows += 1
                right += power(out[0, s:s + window]) > power(out[1, s:s + window])
    return {"cases": len(leaks), "silent_leak_db": float(np.median(leaks)),
            "silent_vs_speaker_db": float(np.median(versus)), "speaker_si_sdr": float(np.mean(quality)),
            "speaker_voice_gain_db": float(np.median(levels)), "windows": windows,
            "speaker_louder_share": right / max(windows, 1)}


def train(args) -> Path:
    require_data()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = RUN_DIR / args.run
    out.mkdir(parents=True, exist_ok=True)
    units = face_units(TRAIN_IDS, args.encoder)
    val_units = face_units(VALIDATION_IDS, args.encoder)
    by_id = {i: [u for u in val_units if u.identity == i] for i in VALIDATION_IDS}
    val_pairs = eval_pairs(by_id[VALIDATION_IDS[0]], by_id[VALIDATION_IDS[1]], args.val_pairs, seed=1, max_s=4.0)
    speech = librispeech_train()
    emb_dim = units[0].emb.shape[1]
    model = build_model(args.mode, emb_dim, args.init, args.hidden, args.arch)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    state_path, best_path, curve_path = out / "state.pt", out / "best.pt", out / "curve.csv"
    step, best, elapsed0 = 0, -1e9, 0.0
    if args.resume and state_path.exists():
        raw = torch.load(state_path, weights_only=False)
        model.load_state_dict(raw["model"])
        opt.load_state_dict(raw["opt"])
        step, best, elapsed0 = raw["step"], raw["best"], raw["elapsed"]
        log.info("resumed at step %d (%.0f s, best validation %.2f dB)", step, elapsed0, best)
    log.info("%s: %d training units (%.1f min), %d LibriSpeech utterances, %d validation pairs, %d parameters",
             args.mode, len(units), sum(u.frames for u in units) / 1500, len(speech), len(val_pairs),
             sum(p.numel() for p in model.parameters()))
    weights = None
    gen_pairs = []
    if args.generated:  # a share of generated (drawn/photo) faces, so the demo's kind of face keeps working
        from lab.real_faces.generated_units import DRAWN_SEEDS, load_units

        gen = [u for u in load_units(args.generated) if int(u.name.removeprefix("seed")) not in DRAWN_SEEDS]
        real_frames = np.array([u.frames for u in units], np.float64)
        weights = np.concatenate([real_frames / real_frames.sum() * (1 - args.generated_share),
                                  np.full(len(gen), args.generated_share / len(gen))])
        alone = np.r_[np.zeros(len(units), bool), np.full(len(gen), args.generated_alone)]
        units = units + gen
        held = args.generated.with_name("eval.npz")
        if held.exists():
            g = load_units(held)
            gen_pairs = eval_pairs(g[0::2], g[1::2], len(g) // 2, seed=1, max_s=4.0)
        log.info("generated faces: %d units from %s, %.0f %% of targets%s; %d held-out generated pairs",
                 len(gen), args.generated, 100 * args.generated_share,
                 " (each heard alone, with noise)" if args.generated_alone else "", len(gen_pairs))
    sampler = RealMixtureSampler(units, speech, seed=args.seed + step, crop_s=args.crop_seconds,
                                 noise=train_noise(speech, args.babble),
                                 weights=weights, alone=alone if args.generated else None,
                                 silent_prob=args.silent_faces)
    total = args.minutes * 60
    start = time.monotonic() - elapsed0
    from tqdm import tqdm

    bar = tqdm(desc=f"separator {args.run}", initial=step, mininterval=10.0)
    running = None
    next_eval = (int(elapsed0 // args.eval_seconds) + 1) * args.eval_seconds
    with open(curve_path, "a", newline="") as f:
        writer = csv.writer(f)
        if f.tell() == 0:
            writer.writerow(["step", "seconds", "train_loss", "val_si_sdri", "val_swap_rate"])
        while time.monotonic() - start < total:
            for g in opt.param_groups:
                g["lr"] = learning_rate(args.lr, time.monotonic() - start, total)
            model.train()
            loss = step_loss(model, args.mode, sampler.sample(args.batch_size), args.spectral, args.train_competition)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
            elapsed = time.monotonic() - start
            if elapsed >= next_eval or elapsed >= total:
                next_eval += args.eval_seconds
                r = evaluate_pairs(model, val_pairs)
                if model.config.lip_dim:  # reported beside: the muted face's leak (the choice stays on SI-SDRi)
                    r["silent_leak_db"] = evaluate_silent_face(model, val_pairs)["silent_leak_db"]
                if gen_pairs:  # reported beside (the choice stays on the real faces' figure)
                    r["generated_si_sdri"] = evaluate_pairs(model, gen_pairs)["si_sdri"]
                writer.writerow([step, round(elapsed), round(running, 4), round(r["si_sdri"], 3), round(r["swap_rate"], 3)])
                f.flush()
                log.info("step %d (%.0f min): validation %s", step, elapsed / 60, json.dumps({k: round(v, 3) for k, v in r.items()}))
                if r["si_sdri"] > best:
                    best = r["si_sdri"]
                    info = {"step": step, "train_minutes": round(elapsed / 60, 1), "mode": args.mode, "validation": r,
                            "train_ids": TRAIN_IDS, "validation_ids": VALIDATION_IDS, "encoder": str(args.encoder),
                            "batch_size": args.batch_size, "lr": args.lr, "spectral": args.spectral,
                            "generated": str(args.generated) if args.generated else None,
                            "generated_share": args.generated_share if args.generated else 0.0,
                            "generated_alone": bool(args.generated and args.generated_alone),
                            "train_competition": args.train_competition, "silent_faces": args.silent_faces}
                    checkpoint(model, info).save(best_path)
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                            "elapsed": time.monotonic() - start}, state_path)
    bar.close()
    save_last(args.run)
    return best_path


def save_last(run: str) -> Path:
    """``last.pt``: the model where a run's training ended (from its ``state.pt``), beside ``best.pt``, so
    the end of the annealed schedule can be compared with the best validation point."""
    out = RUN_DIR / run
    best = load_checkpoint(out / "best.pt")
    info = dict(best.info)
    raw = torch.load(out / "state.pt", weights_only=False)
    info.update(step=raw["step"], train_minutes=round(raw["elapsed"] / 60, 1), validation=None, last=True)
    model = best.model()
    model.load_state_dict(raw["model"])
    checkpoint(model, info).save(out / "last.pt")
    return out / "last.pt"


def report_pairs(split: str, encoder: Path = SYNC_WEIGHTS, pairs: int = 40) -> list[tuple[FaceUnit, FaceUnit]]:
    """The fixed pairs of the report (one clip of each identity of ``split``), whole clips."""
    ids = TEST_IDS if split == "test" else VALIDATION_IDS
    units = face_units(ids, encoder)
    by_id = {i: [u for u in units if u.identity == i] for i in ids}
    return eval_pairs(by_id[ids[0]], by_id[ids[1]], pairs, seed=7)


def calibrate(run: str, encoder: Path, pairs: int = 40) -> Path:
    """``RUN[:last]`` → ``RUN/calibrated.pt``: the CRN with ``output_gain`` set so that the median face's own voice
    keeps its level on the validation pairs at 0 dB (`voice_gain_db`; the pairs of ``--evaluate --split
    validation``). Only the level moves: SI-SDR and swaps are the same. Validation identities only. Each face is
    judged alone (no competition): the gain is a lone face's, and two faces sharing bins only take away.
    ``PATH.pt`` (any CRN file, e.g. an audio-only one: its outputs in their best assignment) → ``PATH-calibrated.pt``."""
    from dataclasses import replace

    name, _, which = run.partition(":")
    source = Path(run) if run.endswith(".pt") else RUN_DIR / name / f"{which or 'best'}.pt"
    ck = load_checkpoint(source)
    if not isinstance(ck.config, CrnConfig):
        raise SystemExit(f"--calibrate {run}: only a CRN carries an output gain")
    torch.set_num_threads(1)
    val = report_pairs("validation", encoder, pairs)
    before = evaluate_pairs(ck.model(), val, competition=0.0)["voice_gain_db"]
    gain = ck.config.output_gain * 10 ** (-before / 20)
    calibrated = replace(ck, config=replace(ck.config, output_gain=gain),
                         info={**ck.info, "calibrated_from": run, "voice_gain_db_before": before})
    after = evaluate_pairs(calibrated.model(), val, competition=0.0)["voice_gain_db"]
    calibrated.info["voice_gain_db_after"] = after
    path = source.with_name(f"{source.stem}-calibrated.pt") if run.endswith(".pt") else RUN_DIR / name / "calibrated.pt"
    calibrated.save(path)
    log.info("%s: median voice gain %.2f dB → output_gain %.3f → %.2f dB; wrote %s", run, before, gain, after, path)
    return path


def test_report(runs: list[str], encoder: Path, pairs: int = 40, split: str = "test",
                competition: float = FACE_COMPETITION, guide: Path | None = AUDIO_ONLY_WEIGHTS,
                blend: float = AUDIO_ONLY_BLEND, memory_frames: float = ASSIGN_MEMORY_FRAMES) -> dict:
    """The stage-3 figures: TEST_IDS pairs at 0 dB; then with a LibriSpeech test-other talker off screen
    (−5 dB re. each face) and noise (eval part of the recordings, 10 dB SNR). ``split="validation"``: the
    same on VALIDATION_IDS (whole clips, not training's 4 s crops), to choose between designs. AV runs go
    through the engine's two-voice blend with the audio-only separator ``guide`` (None or ``blend`` 0: the AV
    masks alone, as before session 13)."""
    from lab.corpus.noise import noise_clip
    from lab.corpus.speech import EVAL, _load_flac, speakers

    torch.set_num_threads(1)
    test = report_pairs(split, encoder, pairs)
    rng = np.random.default_rng(11)
    talkers = [_load_flac(f) for s in speakers(EVAL, include_espeak=False) for f in s.files[:2]]
    extra, noise = [], []
    for p in test:
        n = len(p[0].audio)
        x = talkers[int(rng.integers(len(talkers)))]
        extra.append(np.resize(x, n))
        noise.append(noise_clip(EVAL, n, rng))
    guide_model = None if guide is None or blend == 0 else load_checkpoint(guide).model().eval()
    how = {"competition": competition, "guide": guide_model and str(guide), "blend": blend,
           "assign_memory_frames": memory_frames}
    blending = {"competition": competition, "guide": guide_model, "blend": blend, "memory_frames": memory_frames}
    report = {}
    for run in runs:
        name, _, which = run.partition(":")  # "av" → its best.pt; "av:last" → the model where training ended
        ck = load_checkpoint(Path(run) if run.endswith(".pt") else RUN_DIR / name / f"{which or 'best'}.pt")
        model = ck.model()
        report[run] = {"info": {k: ck.info.get(k) for k in ("step", "train_minutes", "mode")},
                       "validation": ck.info.get("validation"), **how,
                       f"{split}_0db": evaluate_pairs(model, test, **blending),
                       f"{split}_offscreen_noise": evaluate_pairs(model, test, extra, noise, **blending)}
        if model.config.lip_dim:
            report[run][f"{split}_silent_face"] = evaluate_silent_face(model, test, **blending)
            report[run][f"{split}_long_streams"] = evaluate_long_streams(model, test, **blending)
        else:  # audio-only: separate, then assign each output to a face by lip sync (stage 2)
            from lab.real_faces.train_sync import load_pair

            _, audio_model = load_pair(encoder)
            for how in ("sync", "sync-clip"):
                report[run][f"{split}_0db_{how}"] = evaluate_pairs(model, test, assign=how, audio_model=audio_model)
                report[run][f"{split}_offscreen_noise_{how}"] = evaluate_pairs(model, test, extra, noise, assign=how,
                                                                            audio_model=audio_model)
    print(json.dumps(report, indent=1))
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"report-{split}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="av")
    p.add_argument("--mode", choices=("av", "audio-only"), default="av")
    p.add_argument("--minutes", type=float, default=240.0)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--crop-seconds", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--arch", choices=("gru", "crn"), default="gru",
                   help="gru: the shipped network; crn: the frequency-aware CRN (--init an audio_pretrain CRN run)")
    p.add_argument("--spectral", type=float, default=10.0, help="weight of the compressed spectral loss")
    p.add_argument("--init", type=Path, default=None,
                   help="start the matching tensors from these weights (default: the shipped separator of the mode)")
    p.add_argument("--encoder", type=Path, default=SYNC_WEIGHTS, help="the frozen lip encoder (stage 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generated", type=Path, default=None,
                   help="generated face units (lab.real_faces.generated_units, e.g. out/real_faces/generated/train.npz)")
    p.add_argument("--generated-share", type=float, default=0.25, help="share of targets drawn from --generated")
    p.add_argument("--generated-alone", action="store_true",
                   help="the --generated faces are only ever heard alone (with noise): they teach a lone voice to "
                        "pass, not drawn-mouth separation")
    p.add_argument("--babble", type=float, default=0.0,
                   help="share of the noisy mixtures whose noise is a crowd of 4-8 LibriSpeech training talkers")
    p.add_argument("--train-competition", type=float, default=0.0,
                   help="train with the on-screen faces of a mixture competing for each bin, as the engine runs "
                        "them (the exponent; 0: each face alone, the recipe before session 12)")
    p.add_argument("--silent-faces", type=float, default=0.0,
                   help="share of mixtures that also show a muted face (lips moving, voice absent), trained to "
                        "come out silent")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--val-pairs", type=int, default=16)
    p.add_argument("--eval-seconds", type=float, default=600.0, help="validate every so many seconds")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--evaluate", nargs="*", default=None, metavar="RUN",
                   help="test report of these runs (RUN: its best.pt, RUN:last, RUN:calibrated, or a .pt file such as "
                        "engines/weights/separator.pt, the shipped AV separator)")
    p.add_argument("--split", choices=("test", "validation"), default="test", help="with --evaluate: whose pairs")
    p.add_argument("--competition", type=float, default=FACE_COMPETITION,
                   help="with --evaluate: how hard the two faces compete for each bin (0: not at all)")
    p.add_argument("--guide", type=Path, default=AUDIO_ONLY_WEIGHTS,
                   help="with --evaluate: the audio-only separator whose two voices the two faces take (the engine's "
                        "two-voice blend; default the shipped one)")
    p.add_argument("--assign-memory-s", type=float, default=ASSIGN_MEMORY_FRAMES / 100,
                   help="with --evaluate: the two-voice blend's assignment memory in seconds (the engine's: 10)")
    p.add_argument("--blend", type=float, default=AUDIO_ONLY_BLEND,
                   help="with --evaluate: share of the audio-only voice in each of two faces' masks (0: the AV "
                        "masks alone, as before session 13)")
    p.add_argument("--save-last", metavar="RUN", default=None, help="write RUN/last.pt from its state.pt and exit")
    p.add_argument("--calibrate", metavar="RUN[:last]", default=None,
                   help="write RUN/calibrated.pt (or PATH-calibrated.pt for a .pt file): a CRN's output gain set on "
                        "the validation pairs, then exit")
    args = p.parse_args(argv)
    if args.init is None and args.arch == "gru":
        args.init = AV_WEIGHTS if args.mode == "av" else AUDIO_ONLY_WEIGHTS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.save_last:
        print(save_last(args.save_last))
        return 0
    if args.calibrate:
        print(calibrate(args.calibrate, args.encoder))
        return 0
    if args.evaluate is not None:
        test_report(args.evaluate or [args.run], args.encoder, split=args.split, competition=args.competition,
                    guide=args.guide, blend=args.blend, memory_frames=args.assign_memory_s * 100)
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
