"""The audio-only separator's training speech, packed small enough to travel to a borrowed GPU.

    python -m lab.real_faces.face_tracks --only id09 id13         # the validation people's face cache, once
    python -m lab.separation.speech_pack out/speech_pack          # build (needs ../shared/data)

A lent accelerator gets the working tree plus 64 MiB, so the pack is Opus at ~31 kb/s (libsndfile, through
soundfile): ~100 minutes of 16 kHz speech in ~24 MB. Lossy coding does not bend the ground truth: a mixture is the
sum of the *decoded* sources, so each source is exactly what the network must give back.

Groups (one Ogg file each, every item peak-normalised and concatenated; ``index.json`` says where each starts):
  ``libri_train`` / ``libri_held``  LibriSpeech train-clean-100, split by `train_validation_speakers`
  ``vox_train``    the VoxCeleb clips of the real-face training identities (`face_tracks.TRAIN_IDS`), whole, with
                   their own rooms and microphones: the voices the shipped separator meets on real video
  ``noise_train``  the training part of the noise recordings (`lab.corpus.noise`)
  ``val_pairs``    the real-face validation pairs (`train_separator.report_pairs("validation")`: id09 × id13 at
                   0 dB), the two references of each pair one after the other, so a trainer can choose its
                   checkpoint on real voices. No test identity is packed.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.corpus.speech import TRAIN, _load_flac, speakers

log = logging.getLogger(__name__)
RATE = 16000
OPUS_LEVEL = 0.9  # libsndfile's compression level → ~31 kb/s Opus at 16 kHz
VALIDATION_SPEAKERS = 21  # the last LibriSpeech training speakers, held out to choose checkpoints


def speech(split: str) -> dict[str, list[np.ndarray]]:
    """Speaker id → utterances (float32, 16 kHz)."""
    return {s.id: [_load_flac(f) for f in s.files] for s in speakers(split, include_espeak=False)}


def train_validation_speakers() -> tuple[dict, dict]:
    everyone = speech(TRAIN)
    ids = sorted(everyone)
    held = set(ids[-VALIDATION_SPEAKERS:])
    return ({k: v for k, v in everyone.items() if k not in held}, {k: v for k, v in everyone.items() if k in held})


@dataclass
class Item:
    speaker: str
    name: str
    audio: np.ndarray  # float32, 16 kHz


def _write_group(folder: Path, group: str, items: list[Item], normalise: bool = True) -> dict:
    """``normalise``: each item to peak 0.5 (not for pairs, whose two references keep their ratio)."""
    import soundfile as sf

    waves = [it.audio / max(float(np.abs(it.audio).max()), 1e-6) * 0.5 if normalise else it.audio for it in items]
    starts = np.cumsum([0] + [len(w) for w in waves])
    sf.write(folder / f"{group}.ogg", np.concatenate(waves).astype(np.float32), RATE, format="OGG", subtype="OPUS",
             compression_level=OPUS_LEVEL)
    return {"file": f"{group}.ogg",
            "items": [[it.speaker, it.name, int(s), len(w)] for it, s, w in zip(items, starts, waves)]}


def write(folder: Path, groups: dict[str, list[Item]]) -> None:
    """Each group as one Ogg file, and ``index.json`` (``val_pairs`` keep their references' ratio)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"rate": RATE, "groups": {}}
    for group, items in groups.items():
        index["groups"][group] = _write_group(folder, group, items, normalise=group != "val_pairs")
        log.info("%s: %d items, %.1f min", group, len(items), sum(len(i.audio) for i in items) / RATE / 60)
    (folder / "index.json").write_text(json.dumps(index))


def load(folder: Path) -> dict[str, list[Item]]:
    """Group → items, decoded (float32)."""
    import soundfile as sf

    if not (folder / "index.json").is_file():
        raise SystemExit(f"SPEECH PACK MISSING: {folder / 'index.json'} (build it: python -m lab.separation.speech_pack "
                         f"{folder})")
    index = json.loads((folder / "index.json").read_text())
    out = {}
    for group, entry in index["groups"].items():
        audio, rate = sf.read(folder / entry["file"], dtype="float32")
        if rate != RATE:
            raise ValueError(f"{folder / entry['file']}: {rate} Hz, expected {RATE}")
        out[group] = [Item(s, n, audio[start:start + length]) for s, n, start, length in entry["items"]]
    return out


def by_speaker(items: list[Item]) -> dict[str, list[np.ndarray]]:
    pool: dict[str, list[np.ndarray]] = {}
    for it in items:
        pool.setdefault(it.speaker, []).append(it.audio)
    return pool


def validation_pairs(items: list[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The packed real validation pairs: (mixture, references (2, N)) each, the mixture the references' sum."""
    out = []
    for a, b in zip(items[0::2], items[1::2]):
        refs = np.stack([a.audio, b.audio])
        out.append((refs.sum(0), refs))
    return out


def build(folder: Path) -> None:
    from lab.corpus.noise import NOISE_FILES, recording_part
    from lab.real_faces.face_tracks import TRAIN_IDS, VOXCELEB, require_data
    from lab.real_faces.real_mixtures import pair_mixture
    from lab.real_faces.train_separator import report_pairs
    from media.av_io import audio_from

    require_data()
    pool, held = train_validation_speakers()
    groups = {
        "libri_train": [Item(k, str(i), u) for k, us in sorted(pool.items()) for i, u in enumerate(us)],
        "libri_held": [Item(k, str(i), u) for k, us in sorted(held.items()) for i, u in enumerate(us)],
        "vox_train": [Item(ident, clip.stem, audio_from(clip, 0.0, RATE))
                      for ident in TRAIN_IDS for clip in sorted((VOXCELEB / ident).glob("*.mp4"))],
        "noise_train": [Item(name, name, part) for name in NOISE_FILES
                        if (part := recording_part(name, TRAIN)) is not None],
    }
    pairs = []
    for k, pair in enumerate(report_pairs("validation")):
        mix, refs = pair_mixture(pair)
        refs = refs * (0.5 / max(float(np.abs(mix).max()), 1e-6))
        pairs += [Item(pair[0].identity, f"{k}a", refs[0]), Item(pair[1].identity, f"{k}b", refs[1])]
    groups["val_pairs"] = pairs
    write(folder, groups)
    log.info("pack %s: %.1f MB", folder, sum(p.stat().st_size for p in folder.iterdir()) / 1e6)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build(args.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
