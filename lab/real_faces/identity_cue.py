"""Issue 16, item 4: does a speaker identity cue help assign the audio-only separator's outputs to faces?

    python -m lab.real_faces.identity_cue --split validation [--pairs 40]   # table: baselines + the variant grid
    python -m lab.real_faces.identity_cue --split validation --diagnose     # why causal sync trails whole-clip
    python -m lab.real_faces.identity_cue --split test                      # the chosen variant only
    python -m lab.real_faces.identity_cue --cost                            # encoder CPU-s per s of audio

Separate-then-assign, as `train_separator.assign_by_sync`, with the audio-only run ``ao`` (3 outputs) on the
stage-3 evaluation pairs (0 dB, whole clips, `eval_pairs(..., seed=7)`, as `test_report`). The identity cue:
each face enrols a voice (Resemblyzer 0.1.4's GE2E d-vector at 16 kHz; its ``pretrained.pt`` is loaded by the
small module below, so neither librosa nor webrtcvad is needed: ``pip install resemblyzer==0.1.4 --no-deps``)
from the output stream currently assigned to it, only while that face's lip-sync margin for that stream over
the last second is confident; the assignment then maximises  sync score + w · (similarity of each output's
newest 1.6 s to the face's enrolled voice, centred over outputs). Decisions every block ("block") or every
video frame with the identity term refreshed every block ("frame"). Causal: a decision for video frame t
uses audio up to the end of frame t plus ``lookahead_s`` (≤ 0.2 s); sync cosine frame f counts as known from
frame f + 4, as in `assign_by_sync`. Before the first decision (``first_frames`` of sync evidence; 25 in
`assign_by_sync`) a face gets the sum of the outputs, as there. Results and the diagnosis: IDENTITY_CUE.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lab.real_faces.face_tracks import TEST_IDS, VALIDATION_IDS
from lab.real_faces.real_mixtures import eval_pairs, pair_mixture
from lab.real_faces.train_separator import (RUN_DIR, SYNC_LAG_FRAMES, SYNC_MIN_FRAMES, SYNC_WEIGHTS,
                                            face_units, separate, si_sdr, sync_embedding)

log = logging.getLogger(__name__)
HOP = 640  # samples per video frame (16 kHz, 25 fps)
SR = 16000


# -- Resemblyzer's voice encoder without librosa ------------------------------------------------------------


def resemblyzer_weights() -> Path:
    spec = importlib.util.find_spec("resemblyzer")  # locate without importing (its __init__ imports librosa)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the Resemblyzer wheel: pip install resemblyzer==0.1.4 --no-deps")
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"


def slaney_mel_filterbank(sr: int = SR, n_fft: int = 400, n_mels: int = 40) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) defaults: Slaney mel scale, Slaney area normalisation."""
    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        lin = f / (200.0 / 3)
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))

    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    w = np.maximum(0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    return (w * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)


_MEL_FB = slaney_mel_filterbank()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)  # periodic Hann


def mel_power(wave: np.ndarray) -> np.ndarray:
    """(N,) → (1 + N // 160, 40) mel power, as `resemblyzer.audio.wav_to_mel_spectrogram` (librosa
    melspectrogram: n_fft = win = 400, hop 160, centred with zero padding, power 2, not log). Frame j is
    centred on sample 160 j (it sees 12.5 ms ahead)."""
    x = np.pad(wave.astype(np.float32), 200)
    n = 1 + (len(x) - 400) // 160
    idx = np.arange(400)[None, :] + 160 * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WINDOW, axis=1)) ** 2
    return (spec @ _MEL_FB.T).astype(np.float32)


class VoiceEncoder(nn.Module):
    """Resemblyzer 0.1.4's GE2E speaker encoder: 3-layer LSTM 256 on 40 mel bands → Linear → ReLU → L2."""

    def __init__(self, weights: Path | None = None):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        state = torch.load(weights or resemblyzer_weights(), map_location="cpu", weights_only=True)["model_state"]
        self.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")})
        self.eval()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / (e.norm(dim=1, keepdim=True) + 1e-9)

    def embed(self, mels: list[np.ndarray]) -> np.ndarray:
        """Windows of mel frames (equal lengths batched) → (len(mels), 256)."""
        out = np.zeros((len(mels), 256), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(len(m), []).append(i)
        with torch.inference_mode():
            for _, idx in by_len.items():
                out[idx] = self(torch.from_numpy(np.stack([mels[i] for i in idx]))).numpy()
        return out


def window_gain2(wave: np.ndarray) -> float:
    """Power gain of Resemblyzer's `normalize_volume(wav, -30 dBFS, increase_only=True)` for this window."""
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)) + 1e-9)
    return max(1.0, (10 ** (-30 / 20) / rms) ** 2)


class OutputVoices:
    """Speaker embeddings of one output stream's windows ending at given samples, computed on demand and cached.

    The mel power of the whole output is computed once (frame j spans samples 160 j ± 200); a window ending at
    sample e uses the frames that end by e (strictly causal), scaled as Resemblyzer's volume normalisation of
    that window would scale them."""

    def __init__(self, encoder: VoiceEncoder, wave: np.ndarray, window_s: float):
        self.encoder, self.wave, self.mel = encoder, wave, mel_power(wave)
        self.frames = int(round(window_s * 100))
        self.cache: dict[int, tuple[np.ndarray, float]] = {}

    def at(self, ends: list[int]) -> list[tuple[np.ndarray, float]]:
        """[(embedding, window RMS)] for windows ending at samples ``ends``."""
        todo = [e for e in ends if e not in self.cache]
        if todo:
            mels, rms = [], []
            for e in todo:
                j1 = min(len(self.mel), max(1, (e - 200) // 160 + 1))  # frames whose window ends by sample e
                j0 = max(0, j1 - self.frames)
                w = self.wave[max(0, e - self.frames * 160):e]
                mels.append(self.mel[j0:j1] * window_gain2(w))
                rms.append(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))))
            for e, emb, r in zip(todo, self.encoder.embed(mels), rms):
                self.cache[e] = (emb, r)
        return [self.cache[e] for e in ends]


# -- assignment ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    block_s: float = 0.5  # one decision per block
    window_s: float = 1.6  # speaker-embedding window (Resemblyzer's partial utterance)
    enrol_threshold: float = 0.1  # enrol while the assigned output's recent sync cosine beats the others' by this
    enrol_window_s: float = 1.0  # the recent sync evidence used for that confidence
    weight: float = 1.0  # identity vs sync evidence
    sync: str = "cumulative"  # sync score: "cumulative" (mean since the start, as assign_by_sync) or "recent"
    recent_s: float = 2.0  # window of the "recent" sync score
    lookahead_s: float = 0.0  # audio beyond the end of the block's first frame that the decision may use (≤ 0.2)
    margin: float = 0.0  # a switch must beat the current choice by this much
    active_db: float = -25.0  # an output window quieter than this re. the mixture window has no identity score
    first_frames: int = SYNC_MIN_FRAMES  # sync evidence (video frames) before the first decision
    decide: str = "block"  # "block": one decision per block; "frame": every frame, identity term per block
    enrol_on: str = "recent"  # confidence from the "recent" sync window, the "cumulative" score, or "both"
    preenrol: int = 0  # diagnostic "known speaker": 1 = each face starts enrolled from another clip of its person


def unit(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


def sync_cosines(outputs: np.ndarray, embs: list[np.ndarray], audio_model) -> np.ndarray:
    """(K, M, T) per-frame cosine of each face's lip embedding with each output's sync audio embedding."""
    frames = len(embs[0])
    aud = np.stack([unit(sync_embedding(audio_model, o[:frames * HOP], frames)) for o in outputs])
    return np.einsum("kte,mte->kmt", np.stack([unit(e) for e in embs]), aud)


def best_perm(score: np.ndarray, perms) -> tuple[int, ...]:
    return max(perms, key=lambda p: sum(score[k, m] for k, m in enumerate(p)))


def perm_score(score, p) -> float:
    return float(sum(score[k, m] for k, m in enumerate(p)))


def assign_causal_sync(outputs: np.ndarray, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`train_separator.assign_by_sync(causal=True)` from precomputed cosines; also the per-frame choice (T, K)
    (−1 before the first decision)."""
    k_, m_, frames = cos.shape
    perms = list(itertools.permutations(range(m_), k_))
    cum = np.cumsum(cos, axis=-1)
    choices = np.full((frames, k_), -1)
    choice = None
    for t in range(frames):
        seen = t - SYNC_LAG_FRAMES
        if seen + 1 >= SYNC_MIN_FRAMES:
            score = cum[:, :, seen] / (seen + 1)
            new = best_perm(score, perms)
            if choice is None or perm_score(score, new) - perm_score(score, choice) > 0.0:
                choice = new
        if choice is not None:
            choices[t] = choice
    return assemble(outputs, choices), choices


def assemble(outputs: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """Per-frame choice (T, K) (−1: the sum of the outputs) → (K, N); the last frame runs to the end."""
    frames, k_ = choices.shape
    out = np.zeros((k_, outputs.shape[1]), np.float32)
    total = outputs.sum(0)
    for t in range(frames):
        end = outputs.shape[1] if t == frames - 1 else (t + 1) * HOP
        for k in range(k_):
            m = choices[t, k]
            out[k, t * HOP:end] = total[t * HOP:end] if m < 0 else outputs[m, t * HOP:end]
    return out


def assign_identity(outputs: np.ndarray, cos: np.ndarray, voices: list[OutputVoices], mix: np.ndarray,
                    v: Variant, trace: dict | None = None, prior: np.ndarray | None = None) -> np.ndarray:
    """Causal block-wise assignment by lip sync + enrolled voice identity; returns the per-frame choice (T, K)."""
    k_, m_, frames = cos.shape
    perms = list(itertools.permutations(range(m_), k_))
    cum = np.concatenate([np.zeros((k_, m_, 1)), np.cumsum(cos, axis=-1)], axis=-1)  # cum[..., f] = sum of < f
    block = max(1, int(round(v.block_s * 25)))
    la = int(round(v.lookahead_s * SR))
    enrol_frames = max(1, int(round(v.enrol_window_s * 25)))
    recent = max(1, int(round(v.recent_s * 25)))
    active = 10 ** (v.active_db / 20)
    enrolled = np.zeros((k_, 256))
    n_enrolled = np.zeros(k_, int)
    choices = np.full((frames, k_), -1)
    choice = None
    first = None
    ident = np.zeros((k_, m_))
    # first decision: at the first frame whose usable sync evidence reaches `first_frames` (25 = assign_by_sync),
    # counting the lookahead; then every block ("block") or every frame with the identity term refreshed every
    # block ("frame")
    for t in range(frames):
        end = min(len(mix), (t + 1) * HOP + la)  # audio usable by a decision made for frame t
        usable = min(frames, (end // HOP) - SYNC_LAG_FRAMES)  # sync cosine frames < usable are known
        if first is None and usable < v.first_frames:
            continue
        if first is None:
            first = t
        refresh = (t - first) % block == 0
        if v.decide == "block" and not refresh:
            choices[t] = choice
            continue
        if v.sync == "recent":
            lo = max(0, usable - recent)
            sync = (cum[:, :, usable] - cum[:, :, lo]) / (usable - lo)
        else:
            sync = cum[:, :, usable] / usable
        if refresh and v.weight > 0:
            embs = [vo.at([end])[0] for vo in voices]
            mix_win = mix[max(0, end - voices[0].frames * 160):end].astype(np.float64)
            mix_rms = float(np.sqrt(np.mean(mix_win ** 2))) + 1e-9
            is_active = np.array([r / mix_rms > active for _, r in embs])
            e = np.stack([x for x, _ in embs])
            if v.preenrol and prior is not None:  # diagnostic: a voice enrolled before, from another clip
                enrolled[:], n_enrolled[:] = prior, 1
            elif choice is not None:  # enrol from the stream assigned until now, where its lip sync is confident
                lo = max(0, usable - enrol_frames)
                rec = (cum[:, :, usable] - cum[:, :, lo]) / max(1, usable - lo)
                for k in range(k_):
                    m = choice[k]
                    evidence = {"recent": (rec,), "cumulative": (sync,), "both": (rec, sync)}[v.enrol_on]
                    conf = [ev[k, m] - max(ev[k, j] for j in range(m_) if j != m) for ev in evidence]
                    if is_active[m] and min(conf) >= v.enrol_threshold:
                        enrolled[k] += e[m]
                        n_enrolled[k] += 1
            ident = np.zeros((k_, m_))
            for k in range(k_):
                if n_enrolled[k]:
                    s = unit(enrolled[k]) @ e.T  # (M,)
                    fill = s[is_active].min() if is_active.any() else 0.0
                    s = np.where(is_active, s, fill)  # a quiet output: no better than the least similar
                    ident[k] = s - s.mean()
        score = sync + v.weight * ident
        new = best_perm(score, perms)
        if choice is None or perm_score(score, new) - perm_score(score, choice) > v.margin:
            choice = new
        choices[t] = choice
        if trace is not None and refresh:
            trace.setdefault("decisions", []).append((t, choice, n_enrolled.copy()))
    return choices


# -- evaluation ----------------------------------------------------------------------------------------------


def load_split(split: str, pairs: int):
    """(the pairs of train_separator.test_report, all units of the split)."""
    ids = TEST_IDS if split == "test" else VALIDATION_IDS
    units = face_units(ids)
    by_id = {i: [u for u in units if u.identity == i] for i in ids}
    return eval_pairs(by_id[ids[0]], by_id[ids[1]], pairs, seed=7), units


def enrolment_prior(it: dict, encoder: VoiceEncoder) -> np.ndarray:
    """(2, 256): each face's voice from the next other clip of the same person (clean audio, 1.6 s windows every
    0.5 s, averaged) — the "known speaker" diagnostic."""
    if "prior" not in it:
        rows = []
        for face in it["pair"]:
            same = [u for u in it["units"] if u.identity == face.identity and u.name != face.name]
            other = same[sum(map(ord, face.name)) % len(same)]
            vo = OutputVoices(encoder, other.audio, 1.6)
            rows.append(unit(np.mean([e for e, _ in vo.at(list(range(25600, len(other.audio) + 1, 8000)))], 0)))
        it["prior"] = np.stack(rows)
    return it["prior"]


def prepare(split, run: str = "ao") -> list[dict]:
    """Per pair: mixture, references, the audio-only outputs, the sync cosines."""
    from engines.separation.separator_model import Checkpoint
    from lab.real_faces.train_sync import load_pair

    pairs, units = split
    model = Checkpoint.load(RUN_DIR / run / "best.pt").model().eval()
    _, audio_model = load_pair(SYNC_WEIGHTS)
    items = []
    for pair in pairs:
        mix, refs = pair_mixture(pair)
        embs = [pair[0].emb, pair[1].emb]
        out = separate(model, mix, embs)
        items.append({"pair": pair, "units": units, "mix": mix, "refs": refs, "out": out,
                      "cos": sync_cosines(out, embs, audio_model)})
    return items


#: the existing causal assignment's first decision: frame 28 (25 frames of sync evidence + the 4-frame lag)
FIRST_DECISION = (SYNC_MIN_FRAMES + SYNC_LAG_FRAMES - 1) * HOP


def score_faces(items: list[dict], estimates: list[np.ndarray]) -> dict:
    """SI-SDRi per face, as `train_separator.evaluate_pairs` (swap: closer to the other face's reference);
    ``*_after``: the same on the samples from the existing causal assignment's first decision (1.12 s) on."""
    res = {}
    for suffix, s0 in (("", 0), ("_after", FIRST_DECISION)):
        imp, swaps = [], 0
        for it, est in zip(items, estimates):
            for k in range(2):
                ref = it["refs"][:, s0:]
                own, other = si_sdr(est[k, s0:], ref[k]), si_sdr(est[k, s0:], ref[1 - k])
                imp.append(own - si_sdr(it["mix"][s0:], ref[k]))
                swaps += other > own
        imp = np.array(imp)
        res.update({f"si_sdri{suffix}": float(imp.mean()), f"si_sdri_median{suffix}": float(np.median(imp)),
                    f"swap_rate{suffix}": swaps / len(imp), f"faces{suffix}": [round(float(x), 3) for x in imp]})
    return res


def paired(table: dict, a: str, b: str, suffix: str = "") -> tuple[float, float]:
    """Mean per-face difference a − b (dB) and its standard error (faces of a pair are not independent:
    the error is computed over pairs)."""
    d = np.array(table[a][f"faces{suffix}"]) - np.array(table[b][f"faces{suffix}"])
    per_pair = d.reshape(-1, 2).mean(1)
    return float(d.mean()), float(per_pair.std(ddof=1) / np.sqrt(len(per_pair)))


def oracle(it) -> tuple[int, int]:
    score = np.array([[si_sdr(o, r) for r in it["refs"]] for o in it["out"]])
    return max(itertools.permutations(range(len(it["out"])), 2), key=lambda p: score[p[0], 0] + score[p[1], 1])


def whole_clip(it) -> tuple[int, int]:
    return best_perm(it["cos"].mean(-1), list(itertools.permutations(range(len(it["out"])), 2)))


#: chosen on validation (grid below): decisions every video frame, the identity term refreshed every 0.5 s from
#: 1.6 s windows, enrol while the recent 1 s sync margin ≥ 0.05, identity weight 0.25, first decision after
#: 3 frames of sync evidence, 0.2 s lookahead
CHOSEN = Variant("identity (chosen)", decide="frame", block_s=0.5, window_s=1.6, enrol_threshold=0.05, weight=0.25,
                 first_frames=3, lookahead_s=0.2)


def variant_grid() -> dict[str, Variant]:
    """The validation grid: sync-only counterparts, block vs frame decisions, enrolment threshold × identity
    weight, early first decision + lookahead, and the "known speaker" diagnostic (not a causal method)."""
    grid = {"sync-only, frame (= existing)": Variant("sync-only, frame (= existing)", decide="frame", weight=0.0),
            "sync-only, block 0.5 s": Variant("sync-only, block 0.5 s", weight=0.0)}
    for block in (0.5, 1.0):
        n = f"id block {block} s, t0.05 w0.5"
        grid[n] = Variant(n, block_s=block, enrol_threshold=0.05, weight=0.5)
    for thr in (0.05, 0.15):
        for w in (0.25, 0.5, 1.0):
            n = f"id frame, t{thr} w{w}"
            grid[n] = Variant(n, decide="frame", enrol_threshold=thr, weight=w)
    early = dict(decide="frame", first_frames=3, lookahead_s=0.2)
    n = "sync-only, frame, first 3 fr, la 0.2 s"
    grid[n] = Variant(n, weight=0.0, **early)
    for thr in (0.02, 0.05, 0.1):
        for w in (0.25, 0.5, 1.0):
            n = f"id frame, first 3 fr, la 0.2 s, t{thr} w{w}"
            grid[n] = Variant(n, enrol_threshold=thr, weight=w, **early)
    grid["chosen"] = CHOSEN
    for w in (1.0, 10.0):
        n = f"diagnostic: known speaker (pre-enrolled), w{w}"
        grid[n] = replace(CHOSEN, name=n, weight=w, preenrol=1)
    return grid


def parse_variant(text: str) -> Variant:
    """``name:key=value,key=value`` (fields of `Variant`)."""
    name, _, rest = text.partition(":")
    kw = {}
    for part in filter(None, rest.split(",")):
        key, _, val = part.partition("=")
        field = Variant.__dataclass_fields__[key]
        kw[key] = val if field.type in ("str", str) else int(val) if field.type in ("int", int) else float(val)
    return Variant(name, **kw)


def run_table(items: list[dict], variants: list[Variant], encoder: VoiceEncoder) -> dict:
    table = {}
    table["oracle"] = score_faces(items, [it["out"][list(oracle(it))] for it in items])
    table["sync causal (existing)"] = score_faces(items, [assign_causal_sync(it["out"], it["cos"])[0] for it in items])
    table["sync whole clip (existing)"] = score_faces(items, [it["out"][list(whole_clip(it))] for it in items])
    voices_by_window: dict[float, list[list[OutputVoices]]] = {}
    for v in variants:
        if v.window_s not in voices_by_window:
            voices_by_window[v.window_s] = [[OutputVoices(encoder, o, v.window_s) for o in it["out"]] for it in items]
        voices = voices_by_window[v.window_s]
        est = [assemble(it["out"], assign_identity(it["out"], it["cos"], vo, it["mix"], v,
                                                   prior=enrolment_prior(it, encoder) if v.preenrol else None))
               for it, vo in zip(items, voices)]
        table[v.name] = score_faces(items, est)
        log.info("%s %s", v.name, json.dumps({k: round(x, 3) for k, x in table[v.name].items()
                                              if not k.startswith("faces")}))
    return table


def print_table(table: dict, split: str, pairs: int) -> None:
    print(f"\n{split}, {pairs} pairs (0 dB, whole clips), audio-only run ao, SI-SDRi dB per face\n")
    print("| assignment | mean | median | swaps | mean after 1.12 s | median after | swaps after |")
    print("|---|---|---|---|---|---|---|")
    for name, r in table.items():
        print(f"| {name} | {r['si_sdri']:.2f} | {r['si_sdri_median']:.2f} | {100 * r['swap_rate']:.1f} % | "
              f"{r['si_sdri_after']:.2f} | {r['si_sdri_median_after']:.2f} | {100 * r['swap_rate_after']:.1f} % |")
    print("\npaired difference to the existing causal sync assignment (dB, ± standard error over pairs):")
    for name in table:
        if name not in ("oracle", "sync causal (existing)"):
            d, e = paired(table, name, "sync causal (existing)")
            d2, e2 = paired(table, name, "sync causal (existing)", "_after")
            print(f"  {name}: {d:+.2f} ± {e:.2f} (whole clip), {d2:+.2f} ± {e2:.2f} (after 1.12 s)")


# -- diagnosis -----------------------------------------------------------------------------------------------


def segment_owner(out: np.ndarray, refs: np.ndarray, seg: int) -> np.ndarray:
    """(M, S) which reference each output segment carries most of (least-squares projection on both
    references); −1 where the output segment is quiet (< −20 dB re. the loudest output there)."""
    n = out.shape[1] // seg
    owner = np.full((len(out), n), -1)
    for s in range(n):
        sl = slice(s * seg, (s + 1) * seg)
        r = refs[:, sl].astype(np.float64)
        energy = np.array([np.sum(o[sl].astype(np.float64) ** 2) for o in out])
        g, *_ = np.linalg.lstsq(r.T, out[:, sl].astype(np.float64).T, rcond=None)  # (2, M)
        part = g ** 2 * np.sum(r ** 2, axis=1, keepdims=True)  # energy of each reference in each output
        for m in range(len(out)):
            if energy[m] > 0.01 * energy.max() and part[:, m].max() > 0:
                owner[m, s] = int(np.argmax(part[:, m]))
    return owner


def diagnose(items: list[dict]) -> dict:
    frames = np.array([it["cos"].shape[-1] for it in items])
    first = SYNC_MIN_FRAMES + SYNC_LAG_FRAMES - 1
    res = {"pairs": len(items), "clip_s_median": float(np.median(frames) / 25), "clip_s_min": float(frames.min() / 25),
           "clip_s_max": float(frames.max() / 25), "first_decision_s": first / 25,
           "share_before_first_decision": float(np.mean(np.minimum(1, (first) / frames)))}
    differ, switches, wrong_first, est = [], [], [], {}
    names = ("causal", "causal, oracle before 1st decision", "mixture before 1st decision, then whole-clip choice",
             "mixture before 1st decision, then oracle choice", "causal first decision held",
             "causal, whole-clip choice before 1st decision")
    for n in names:
        est[n] = []
    seg_oracle, seg_clip, owner_changes, owner_stats = [], [], 0, []
    for it in items:
        out, cos = it["out"], it["cos"]
        causal, ch = assign_causal_sync(out, cos)
        wc, orc = whole_clip(it), oracle(it)
        dec = ch[:, 0] >= 0
        differ.append(float(np.mean(np.any(ch[dec] != np.array(wc), axis=1))))
        switches.append(int(np.sum(np.any(np.diff(ch[dec], axis=0) != 0, axis=1))))
        wrong_first.append(tuple(ch[dec][0]) != tuple(orc))
        est["causal"].append(causal)
        for n, fill in (("causal, oracle before 1st decision", orc),
                        ("causal, whole-clip choice before 1st decision", wc)):
            c2 = ch.copy()
            c2[~dec] = fill
            est[n].append(assemble(out, c2))
        for n, after in (("mixture before 1st decision, then whole-clip choice", wc),
                         ("mixture before 1st decision, then oracle choice", orc)):
            c2 = ch.copy()
            c2[dec] = after
            est[n].append(assemble(out, c2))
        c2 = ch.copy()
        c2[dec] = ch[dec][0]
        est["causal first decision held"].append(assemble(out, c2))
        # do the outputs change speaker mid-clip? owner of each 0.5 s segment of the two oracle outputs
        own = segment_owner(out, it["refs"], 8000)
        for k, m in enumerate(orc):
            o = own[m][own[m] >= 0]
            owner_stats.append(float(np.mean(o != k)) if len(o) else 0.0)
            owner_changes += int(np.sum(np.diff(o) != 0)) if len(o) > 1 else 0
        # oracle per 1 s block vs oracle per clip
        seg = 25
        cb = np.zeros((cos.shape[-1], 2), int)
        perms = list(itertools.permutations(range(len(out)), 2))
        for b0 in range(0, cos.shape[-1], seg):
            sl = slice(b0 * HOP, min(out.shape[1], (b0 + seg) * HOP))
            sc = {p: sum(si_sdr(out[m, sl], it["refs"][k, sl]) for k, m in enumerate(p)) for p in perms}
            cb[b0:b0 + seg] = max(sc, key=sc.get)
        seg_oracle.append(assemble(out, cb))
        seg_clip.append(out[list(orc)])
    res["causal_vs_whole_clip_differs_share_of_decided_frames"] = float(np.mean(differ))
    res["causal_switches_per_clip_mean"] = float(np.mean(switches))
    res["causal_first_decision_not_oracle_share"] = float(np.mean(wrong_first))
    res["oracle_output_segments_owned_by_other_face_share"] = float(np.mean(owner_stats))
    res["oracle_output_owner_changes_per_face"] = owner_changes / (2 * len(items))
    res["faces_with_over_20pct_segments_of_other"] = float(np.mean(np.array(owner_stats) > 0.2))
    res["table"] = {n: score_faces(items, e) for n, e in est.items()}
    res["table"]["oracle per 1 s block"] = score_faces(items, seg_oracle)
    res["table"]["oracle per clip"] = score_faces(items, seg_clip)
    res["table"]["sum of outputs (the pre-decision signal) throughout"] = score_faces(
        items, [np.stack([it["out"].sum(0)] * 2) for it in items])
    # sync evidence strength: whole-clip margin of the chosen vs the next best permutation
    return res


def cue_accuracy(items: list[dict], encoder: VoiceEncoder) -> dict:
    """How often each cue alone points a face at its oracle output. Identity: the newest 1.6 s of each active
    output (every 0.5 s, where the face's reference is active) against the face's voice enrolled on its clean
    reference (whole clip; an upper bound for enrolment). Sync: argmax over the 3 outputs of the mean cosine over
    the last 1 s, and over everything since the start (every 12 frames)."""
    ident_ok = ident_n = 0
    margins = []
    for it in items:
        out, refs, mix, orc = it["out"], it["refs"], it["mix"], oracle(it)
        vo = [OutputVoices(encoder, o, 1.6) for o in out]
        ends = list(range(16000, out.shape[1] + 1, 8000))
        rv = [OutputVoices(encoder, r, 1.6) for r in refs]
        clean = [unit(np.mean([e for e, _ in rv[k].at(ends)], 0)) for k in range(2)]
        for end in ends:
            embs = [v.at([end])[0] for v in vo]
            lo = max(0, end - 25600)
            mr = np.sqrt(np.mean(mix[lo:end].astype(np.float64) ** 2)) + 1e-9
            act = np.array([r / mr > 10 ** (-25 / 20) for _, r in embs])
            e = np.stack([x for x, _ in embs])
            for k in range(2):
                if not act[orc[k]] or np.sqrt(np.mean(refs[k, lo:end].astype(np.float64) ** 2)) < 0.3 * mr:
                    continue
                sim = np.where(act, e @ clean[k], -9.0)
                ident_n += 1
                ident_ok += int(np.argmax(sim) == orc[k])
                margins.append(sim[orc[k]] - max(sim[j] for j in range(len(out)) if j != orc[k]))
    sync_recent = sync_cum = sync_n = 0
    for it in items:
        cos, orc = it["cos"], oracle(it)
        for t in range(25, cos.shape[-1], 12):
            for k in range(2):
                sync_n += 1
                sync_recent += int(np.argmax(cos[k, :, t - 25:t].mean(-1)) == orc[k])
                sync_cum += int(np.argmax(cos[k, :, :t].mean(-1)) == orc[k])
    return {"identity_windows": ident_n, "identity_clean_enrolment_acc": ident_ok / ident_n,
            "identity_margin_p10_p50_p90": [float(x) for x in np.percentile(margins, [10, 50, 90])],
            "sync_windows": sync_n, "sync_last_1s_acc": sync_recent / sync_n, "sync_since_start_acc": sync_cum / sync_n}


def encoder_cost(encoder: VoiceEncoder, window_s: float = 1.6, block_s: float = 0.5, seconds: float = 30.0,
                 streams: int = 3) -> dict:
    """CPU seconds per second of audio, as live: every ``block_s`` one batch of ``streams`` windows (the newest
    ``window_s`` of each output), plus the mel power of every stream."""
    rng = np.random.default_rng(0)
    waves = [(0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32) for _ in range(streams)]
    frames = int(round(window_s * 100))
    t0 = time.process_time()
    mels = [mel_power(w) for w in waves]
    mel_cpu = time.process_time() - t0
    ends = list(range(frames, len(mels[0]), int(round(block_s * 100))))
    t0 = time.process_time()
    for e in ends:
        encoder.embed([m[e - frames:e] for m in mels])
    enc_cpu = time.process_time() - t0
    return {"window_s": window_s, "refresh_every_s": block_s, "streams": streams,
            "cpu_s_per_refresh_batch": enc_cpu / len(ends),
            "encoder_cpu_s_per_audio_s_all_streams": enc_cpu / (len(ends) * block_s),
            "mel_cpu_s_per_audio_s_all_streams": mel_cpu / seconds,
            "total_cpu_s_per_audio_s": enc_cpu / (len(ends) * block_s) + mel_cpu / seconds,
            "one_window_one_stream_cpu_s": enc_cpu / len(ends) / streams}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--variants", nargs="*", default=None,
                   help="names from the grid, or name:key=value,... (Variant fields); default: the grid")
    p.add_argument("--diagnose", action="store_true", help="why the causal sync assignment trails the whole-clip one")
    p.add_argument("--cost", action="store_true", help="CPU cost of the voice encoder")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    encoder = VoiceEncoder()
    if args.cost:
        print(json.dumps(encoder_cost(encoder), indent=1))
        return 0
    grid = variant_grid()
    if args.variants is None and args.split == "test":
        args.variants = ["chosen"]  # the test split is for the chosen variant only
    variants = list(grid.values()) if args.variants is None else [
        grid[v] if v in grid else parse_variant(v) for v in args.variants]
    items = prepare(load_split(args.split, args.pairs))
    result: dict = {}
    if args.diagnose:
        result["diagnosis"] = diagnose(items)
        result["diagnosis"]["cues"] = cue_accuracy(items, encoder)
        print(json.dumps(result["diagnosis"], indent=1))
    else:
        result["table"] = run_table(items, variants, encoder)
        print_table(result["table"], args.split, len(items))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
