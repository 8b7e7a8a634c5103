"""Choosing `SpeakingFaceConfig` (`engines/localization/speaking_face.py`) on the validation identities, and
the real-footage table for other composite seeds.

    python -m lab.localization.speaking_face_tuning tune                 grid on the validation split (id09, id13)
    python -m lab.localization.speaking_face_tuning table --seed 1       the real-footage table, composites of seed 1
    python -m lab.localization.speaking_face_tuning table --audio-delay -0.24   ... deciding at capture time
    python -m lab.localization.speaking_face_tuning windows              composites' choice per window position
    python -m lab.localization.speaking_face_tuning table --sync-run reg_s1   ... another training run's
                                                   lip-sync pair (out/real_faces/sync/reg_s1/*.onnx; tune, windows too)

``tune`` never touches test footage: the one-speaker clips and the two-people composites (`COMPOSITE_PAIRS`
pairs, `COMPOSITE_SEED`) of `VALIDATION_IDS` only. Every input is cached by `real_footage` (truth, lips,
audio embeddings), so the grid replays `SpeakingFace` on cached embeddings: one replay per (window_groups,
min_groups), threshold and margin swept on the replay's top-two scores (`real_footage.decide`). It scores
the speaking face's own decisions, no localizer map (the fused row follows them where a face is chosen).

The objective: J = A − B + C − D − E, all shares of 1, where A = composite windows where the speaker's face
is chosen (in most of the window's scored frames, the "lip sync alone" rule), B = those where the silent
face is, C = one-speaker speech frames (with a face) where the speaker's face is chosen (a lone speaking
face must be picked), D = one-speaker frames with a face and no speech in the last second where any face
is (dropped when there are fewer than 50 such frames), E = frames of the one-speaker clips played with
*another* validation identity's speech (each id09 clip with an id13 clip's audio and the reverse, looped
to length: speech from off screen, the face silent) where a face is chosen. A first objective without E
chose threshold 0, which picks the silent face for off-screen speech in 71 % of frames (validation; the
validation sets hold no non-speech sound with a face in view, and D has only 69 frames, almost all in a
clip's first frames where min_groups already forbids a choice), so E was added; both runs on validation only.
Session 8 added F = frames of the composites played with the audio of another composite whose speaking clip
is neither face (two moving mouths, the voice from off screen) where a face is chosen, so J = A − B + C − D −
E − F, and swept a "pair rule" (`real_footage.decide`: beside a second face, a lead of ``pair_margin`` is
enough under the threshold). The pair rule lifts A by ~5 points and picks a face in 40–63 % of F's frames:
rejected. With F, the best J moved from min_groups 8 to 12.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from lab.localization import real_footage as rf

WINDOW_GROUPS = (13, 25, 50)  # 0.5, 1, 2 s of audio
MIN_GROUPS = (4, 8, 12)
THRESHOLDS = tuple(np.round(np.arange(0.0, 0.451, 0.05), 3))
MARGINS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
MIN_QUIET_FRAMES = 50
#: (pair_margin, pair_floor): inf = the pair rule off
#: training runs of the lip-sync pair (`lab.real_faces.train_sync.RUN_DIR`, not imported: it needs torch)
SYNC_RUNS = rf.REPO / "out" / "real_faces" / "sync"
PAIR_RULES = ((float("inf"), -1.0),) + tuple(itertools.product((0.05, 0.075, 0.1, 0.15, 0.2), (-1.0, 0.0, 0.1)))


def window_decisions(rec: dict, sync_box: np.ndarray) -> tuple[int, int, int]:
    """(windows with the speaker's face chosen, with the silent face, windows): a window's face is the one
    holding the chosen box's centre in more than half its scored frames (the "lip sync alone" row)."""
    spk, out = rec["speaker"], [0, 0, 0]
    on = centre_inside(sync_box, rec["boxes"])  # (n, 2)
    for frames in rf.scored_windows(rec):
        hits = on[frames].sum(axis=0)
        out[0] += int(hits[spk] * 2 > len(frames))
        out[1] += int(hits[1 - spk] * 2 > len(frames))
        out[2] += 1
    return tuple(out)


def centre_inside(sync_box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 2) whether the chosen box's centre (NaN: none chosen) lies in face k's box at each frame, edges
    included (`localizer_real_video.inside`)."""
    cx, cy = (sync_box[:, 0] + sync_box[:, 2]) / 2, (sync_box[:, 1] + sync_box[:, 3]) / 2
    with np.errstate(invalid="ignore"):  # boxes (n, 2, 4)
        return ((boxes[..., 0] <= cx[:, None]) & (cx[:, None] <= boxes[..., 2]) &
                (boxes[..., 1] <= cy[:, None]) & (cy[:, None] <= boxes[..., 3]))


def inputs(split: str, pairs: int, seed: int, threads: int, log=print, sync_dir: Path | None = None
           ) -> tuple[list, list]:
    """([(clip record, lips, audio)], [(composite record, lips, audio)]): truth only, no localizer maps.
    ``sync_dir``: another lip-sync pair's ONNX folder (`sync_dir_of`), default the shipped pair."""
    groups = rf.one_speaker_clips(split)
    specs = rf.composite_specs(split, pairs, seed)
    key, sync_key = rf.model_key(), rf.lip_sync_key(sync_dir)
    faces, engine = rf.FaceEngine(threads), rf.lip_sync_engine(threads, sync_dir)
    truth, clips, comps = {}, [], []
    for path in (p for g in groups.values() for p in g):
        rec = rf.clip_record(path, None, faces, key)
        truth[path] = rec
        clips.append(({**rec, "identity": path.parent.name}, *rf.clip_lip_sync(path, rec, engine, sync_key)))
        if len(clips) % 10 == 0:
            log(f"  one speaker: {len(clips)} clips")
    for i, spec in enumerate(specs):
        rec = rf.composite_record(spec, truth, None, faces, key, f"{split}-seed{seed}")
        shown = {"left": spec.left, "right": spec.right, "speaking_clip": (spec.left, spec.right)[spec.speaker]}
        comps.append(({**rec, **shown}, *rf.composite_lip_sync(spec, rec, truth, engine, sync_key)))
        if (i + 1) % 10 == 0:
            log(f"  two people: {i + 1}/{len(specs)} composites")
    return clips, comps


def off_screen(clips: list) -> list[tuple[dict, dict, np.ndarray]]:
    """Each one-speaker clip's record and lips with the audio embeddings of a clip of the *other* identity
    (k-th clip of one with the k-th, cyclically, of the other), looped to the clip's length."""
    ids = sorted({rec["identity"] for rec, _, _ in clips})
    by_id = {i: [audio for rec, _, audio in clips if rec["identity"] == i] for i in ids}
    out, seen = [], {i: 0 for i in ids}
    for rec, lips, _ in clips:
        others = by_id[ids[1 - ids.index(rec["identity"])]]
        audio = others[seen[rec["identity"]] % len(others)]
        seen[rec["identity"]] += 1
        n = len(rec["speech"])
        out.append((rec, lips, looped(audio, n)))
    return out


def looped(audio: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` audio groups of ``audio`` repeated end to end (another clip's voice, to a clip's length)."""
    return np.concatenate([audio] * (n // len(audio) + 1))[:n]


def off_screen_pairs(comps: list) -> list[tuple[dict, dict, np.ndarray]]:
    """Each composite's record and lips with the audio of a *later* composite whose speaking clip is neither
    of its two faces (looped to length): two moving mouths, the voice from off screen, neither speaking."""
    out = []
    for i, (rec, lips, _) in enumerate(comps):
        shown = {rec["left"], rec["right"]}
        for j in range(1, len(comps)):
            other, _, audio = comps[(i + j) % len(comps)]
            if other["speaking_clip"] not in shown:
                break
        else:
            continue
        n = len(rec["speech"])
        out.append((rec, lips, looped(audio, n)))
    return out


def sweep(clips: list, comps: list, log=print) -> list[dict]:
    """One row per configuration of the grid: its figures and J.

    The pair rule (``pair_margin``, ``pair_floor``) acts only where two faces are scored, so C, D and E (one
    face) are computed once per (threshold, margin) and A, B, F per pair setting."""
    from engines.localization.speaking_face import SpeakingFaceConfig

    def replay(items, config):
        return [rf.sync_trace(lips, audio, np.arange(len(rec["speech"])) / float(rec["fps"]), config)
                for rec, lips, audio in items]

    muted, crowd = off_screen(clips), off_screen_pairs(comps)
    log(f"  {len(crowd)} composites under off-screen speech (F)")
    rows = []
    for wg, mg in itertools.product(WINDOW_GROUPS, MIN_GROUPS):
        if mg > wg:
            continue
        config = replace(SpeakingFaceConfig(), window_groups=wg, min_groups=mg)
        traces_one, traces_two, traces_off = replay(clips, config), replay(comps, config), replay(muted, config)
        traces_crowd = replay(crowd, config)
        log(f"  replayed window_groups={wg} min_groups={mg}")
        for th, mar in itertools.product(THRESHOLDS, MARGINS):
            one: dict[str, int] = {}
            for (rec, _, _), tr in zip(clips, traces_one):
                for k, v in rf.one_speaker_decisions({**rec, "sync_box": rf.decide(tr, th, mar)}).items():
                    one[k] = one.get(k, 0) + v
            off = np.zeros(2, int)
            for (rec, _, _), tr in zip(muted, traces_off):
                face = ~np.isnan(rec["box"][:, 0])
                off += [int((face & ~np.isnan(rf.decide(tr, th, mar)[:, 0])).sum()), int(face.sum())]
            c = one["speaker"] / one["speech"]
            d = one["quiet_chosen"] / one["quiet"] if one["quiet"] >= MIN_QUIET_FRAMES else 0.0
            e = off[0] / off[1]
            for pm, pf in PAIR_RULES:
                two, f = np.zeros(3, int), np.zeros(2, int)
                for (rec, _, _), tr in zip(comps, traces_two):
                    two += window_decisions(rec, rf.decide(tr, th, mar, pm, pf))
                for (rec, _, _), tr in zip(crowd, traces_crowd):
                    both = ~np.isnan(rec["boxes"][:, :, 0]).any(axis=1)
                    f += [int((both & ~np.isnan(rf.decide(tr, th, mar, pm, pf)[:, 0])).sum()), int(both.sum())]
                a, b = two[0] / two[2], two[1] / two[2]
                rows.append({"window_groups": wg, "min_groups": mg, "threshold": float(th), "margin": mar,
                             "pair_margin": pm, "pair_floor": pf, "A": a, "B": b, "C": c, "D": d, "E": e,
                             "F": f[0] / f[1], "quiet": one["quiet"], "windows": int(two[2]),
                             "speech": one["speech"], "off_frames": int(off[1]), "crowd_frames": int(f[1]),
                             "J": a - b + c - d - e - f[0] / f[1]})
    return rows


def tune(args: argparse.Namespace) -> int:
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    clips, comps = inputs("validation", args.pairs, args.seed, args.threads, log, sync_dir_of(args.sync_run))
    rows = sweep(clips, comps, log)
    best = max(rows, key=lambda r: r["J"])
    fmt = ("| {window_groups} | {min_groups} | {threshold:.2f} | {margin:.3f} | {pair_margin} | {pair_floor} | "
           "{A:.1%} | {B:.1%} | {C:.1%} | {D:.1%} | {E:.1%} | {F:.1%} | {J:.3f} |")
    head = ["| window_groups | min_groups | threshold | margin | pair_margin | pair_floor | A: composite windows, "
            "speaker chosen | B: silent face chosen | C: one-speaker speech frames, speaker chosen | D: quiet "
            "frames, a face chosen | E: off-screen speech, one face, a face chosen | F: off-screen speech, two "
            "faces, a face chosen | J = A − B + C − D − E − F |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def table_of(select) -> list[str]:
        return [*head, *(fmt.format(**r) for r in select)]

    def best_per(group, values) -> list[dict]:
        """The best-J row of each group: rows whose ``group(row)`` is each of ``values`` in turn."""
        return [max((r for r in rows if group(r) == v), key=lambda r: r["J"]) for v in values]

    lines = [*run_note(args.sync_run),
             f"Validation split (id09, id13): {len(clips)} one-speaker clips ({best['speech']} speech frames with "
             f"a face, {best['quiet']} quiet frames{'' if best['quiet'] >= MIN_QUIET_FRAMES else ': D dropped'}, "
             f"{best['off_frames']} frames with a face under off-screen speech), "
             f"{len(comps)} composites ({best['windows']} windows; {best['crowd_frames']} frames with both faces "
             f"under off-screen speech), seed {args.seed}.", "",
             "Best 10 of the grid:", "", *table_of(sorted(rows, key=lambda r: -r["J"])[:10]),
             "", "Best with the pair rule off:", "",
             *table_of(best_per(lambda r: r["pair_margin"], [float("inf")])),
             "", "Best per (window_groups, min_groups):", "",
             *table_of(best_per(lambda r: (r["window_groups"], r["min_groups"]),
                                sorted({(r["window_groups"], r["min_groups"]) for r in rows}))),
             "", "Best per threshold (any other value):", "", *table_of(best_per(lambda r: r["threshold"], map(float, THRESHOLDS))),
             "", "Best per pair rule (any other value):", "",
             *table_of(best_per(lambda r: (r["pair_margin"], r["pair_floor"]), PAIR_RULES)),
             "", f"Chosen: window_groups={best['window_groups']}, min_groups={best['min_groups']}, "
             f"threshold={best['threshold']:.2f}, margin={best['margin']}, pair_margin={best['pair_margin']}, "
             f"pair_floor={best['pair_floor']}"]
    text = "\n".join(lines)
    print(text)
    out = args.out or Path(f"out/localization/speaking_face_tuning{run_suffix(args.sync_run)}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


def table(args: argparse.Namespace) -> int:
    lines = rf.evaluate(None, args.split, args.threads, pairs=args.pairs, seed=args.seed,
                        log=lambda m: print(m, file=sys.stderr, flush=True), audio_delay_s=args.audio_delay,
                        sync_dir=sync_dir_of(args.sync_run))
    text = "\n".join([f"Real footage, {args.split} split, composite seed {args.seed}, audio delay "
                      f"{args.audio_delay:+.2f} s (lab/localization/speaking_face_tuning.py table):", "",
                      *run_note(args.sync_run), *lines])
    print(text)
    name = f"real_footage_{args.split}_seed{args.seed}_delay{args.audio_delay:+.2f}{run_suffix(args.sync_run)}.md"
    out = args.out or Path("out/localization") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


def windows(args: argparse.Namespace) -> int:
    """The speaking face's choice per window position in the composites (first second, second, …)."""
    specs = rf.composite_specs(args.split, args.pairs, args.seed)
    sync_dir = sync_dir_of(args.sync_run)
    key, sync_key = rf.model_key(), rf.lip_sync_key(sync_dir)
    faces, engine = rf.FaceEngine(args.threads), rf.lip_sync_engine(args.threads, sync_dir)
    truth = {p: rf.clip_record(p, None, faces, key) for g in rf.one_speaker_clips(args.split).values() for p in g}
    by: dict[int, list[int]] = {}
    lengths = []
    for spec in specs:
        rec = rf.composite_record(spec, truth, None, faces, key, f"{args.split}-seed{args.seed}")
        rec = rf.add_lip_sync(rec, *rf.composite_lip_sync(spec, rec, truth, engine, sync_key),
                              audio_delay_s=args.audio_delay)
        lengths.append(len(rec["speech"]) / rec["fps"])
        per = max(1, int(round(rf.WINDOW_S * rec["fps"])))
        for frames in rf.scored_windows(rec):
            one = {**rec, "speech": np.zeros_like(rec["speech"])}
            one["speech"][frames] = True
            a, b, _ = window_decisions(one, rec["sync_box"])
            row = by.setdefault(min(frames[0] // per, 4), [0, 0, 0])
            row[0], row[1], row[2] = row[0] + a, row[1] + b, row[2] + 1
    lines = [*run_note(args.sync_run),
             f"{len(specs)} composites ({args.split}, seed {args.seed}), {np.median(lengths):.1f} s long (median); "
             f"lip-sync choice per 1 s window, audio delay {args.audio_delay:+.2f} s:", "",
             "| window | the speaker's face | the silent face | windows |", "|---|---|---|---|"]
    for w, (a, b, n) in sorted(by.items()):
        lines.append(f"| {w + 1}{'+' if w == 4 else ''} | {a / n:.1%} | {b / n:.1%} | {n} |")
    print("\n".join(lines))
    return 0


def sync_dir_of(run: str | None) -> Path | None:
    """``--sync-run NAME`` → out/real_faces/sync/NAME (its exported lip_encoder.onnx + sync_audio.onnx; checked
    by `real_footage.sync_files`); None → the shipped pair."""
    if run is None:
        return None
    if "+" in run:  # an ensemble of runs: reg+reg_s1
        return [sync_dir_of(r) for r in run.split("+")]
    folder = SYNC_RUNS / run
    rf.sync_files(folder)  # FileNotFoundError before any footage is read
    return folder


def run_suffix(run: str | None) -> str:
    return "" if run is None else f"_sync-{run}"


def run_note(run: str | None) -> list[str]:
    if run is None:
        return []
    return [f"Lip-sync pair of training run {run!r}: out/real_faces/sync/{run}/lip_encoder.onnx and sync_audio.onnx "
            "(not engines/weights).", ""]


def main(argv: list[str] | None = None) -> int:
    from lab.corpus.data_paths import DataMissingError

    p = argparse.ArgumentParser(prog="python -m lab.localization.speaking_face_tuning",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("tune", "table", "windows"))
    p.add_argument("--split", choices=("test", "validation"), default="test", help="table: which identities")
    p.add_argument("--seed", type=int, default=rf.COMPOSITE_SEED, help="the composites' pair draw")
    p.add_argument("--pairs", type=int, default=rf.COMPOSITE_PAIRS)
    p.add_argument("--audio-delay", type=float, default=0.0,
                   help="table: audio groups up to the frame's time + this (s); -0.24 = the decision at capture time")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--sync-run", default=None, metavar="NAME",
                   help="use out/real_faces/sync/NAME/{lip_encoder,sync_audio}.onnx (`python -m "
                   "lab.real_faces.train_sync --run NAME --export-onnx`) instead of the shipped lip-sync pair")
    args = p.parse_args(argv)
    try:
        sync_dir_of(args.sync_run)
    except FileNotFoundError as exc:
        print(f"error: {exc} (export it: python -m lab.real_faces.train_sync --run {args.sync_run} --export-onnx)",
              file=sys.stderr)
        return 2
    try:
        return {"tune": tune, "table": table, "windows": windows}[args.what](args)
    except DataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
