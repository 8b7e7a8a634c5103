"""Speakers and their speech: LibriSpeech (real) and espeak-ng voices (synthetic).

Splits are by *speaker*, never by utterance: the 10 ``librispeech-test-other`` speakers and the
held-out espeak variants appear only in the ``eval`` split, so no figure we quote is on a voice the
model trained on. Every waveform comes out at 16 kHz, loudness normalised.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, normalise_loudness, resample
from lab.corpus.data_paths import require_data

TRAIN, EVAL = "train", "eval"
SPLITS = (TRAIN, EVAL)

TRAIN_DIR = ("speech", "librispeech-train-clean-100")
EVAL_DIR = ("speech", "librispeech-test-other")

# espeak-ng synthetic speakers: accent x variant. Variants are split so that eval voices are unseen.
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
ESPEAK_TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt", "klatt2")
ESPEAK_EVAL_VARIANTS = ("m5", "m6", "f4", "f5", "klatt3")

# Short everyday sentences for the synthetic voices (written for this project).
SENTENCES = (
    "the morning train was late again so we walked along the river",
    "please put the blue cups back on the top shelf",
    "she said the meeting would start at half past nine",
    "a small dog ran across the garden chasing a yellow ball",
    "we should check the numbers before we send the report",
    "the wind picked up and the boats came back to the harbour",
    "can you hear me clearly or is the sound breaking up",
    "he painted the old fence white during the long weekend",
    "the soup needs a little more salt and some fresh pepper",
    "turn left at the bakery and keep going until the bridge",
    "my sister plays the violin in a band on friday nights",
    "they found the missing keys under the kitchen table",
    "it rained all afternoon so the match was called off",
    "the library closes early on sundays during the summer",
    "i think the second option is cheaper and quicker",
    "open the window please it is getting warm in here",
    "the children built a tall tower out of wooden blocks",
    "we will need three more chairs for the guests tonight",
    "the printer on the second floor has run out of paper",
    "a cold glass of water is all i want right now",
    "the pilot announced that we would land in twenty minutes",
    "let us meet by the fountain in the main square",
    "his grandmother grows tomatoes beans and sweet peppers",
    "the museum opens a new exhibition about the ocean next week",
)


@dataclass(frozen=True)
class Speaker:
    """One voice. ``id`` is stable and unique; ``source`` is ``librispeech`` or ``espeak``."""

    id: str
    source: str
    split: str
    files: tuple[str, ...] = ()  # LibriSpeech FLAC paths
    voice: str = ""  # espeak-ng voice, e.g. "en-us+m3"
    pitch: int = 50
    speed_wpm: int = 165


def _librispeech_speakers(split: str) -> list[Speaker]:
    if split == TRAIN:
        root = require_data(*TRAIN_DIR)
        by_spk: dict[str, list[str]] = {}
        for f in sorted(root.glob("*.flac")):
            by_spk.setdefault(f.name.split("-")[0], []).append(str(f))
    else:
        root = require_data(*EVAL_DIR)
        by_spk = {d.name: sorted(str(f) for f in d.glob("*.flac")) for d in sorted(root.iterdir()) if d.is_dir()}
    return [Speaker(f"libri-{k}", "librispeech", split, tuple(v)) for k, v in sorted(by_spk.items()) if v]


def espeak_speakers(split: str) -> list[Speaker]:
    """Synthetic speakers: every accent x variant of the split, with a fixed pitch and rate each."""
    variants = ESPEAK_TRAIN_VARIANTS if split == TRAIN else ESPEAK_EVAL_VARIANTS
    out = []
    for i, accent in enumerate(ESPEAK_ACCENTS):
        for j, variant in enumerate(variants):
            pitch = 35 + (7 * i + 11 * j) % 35
            speed = 145 + (13 * i + 5 * j) % 40
            out.append(Speaker(f"tts-{accent}+{variant}", "espeak", split, voice=f"{accent}+{variant}",
                               pitch=pitch, speed_wpm=speed))
    return out


@functools.lru_cache(maxsize=4)
def speakers(split: str, include_espeak: bool = True, include_librispeech: bool = True) -> tuple[Speaker, ...]:
    """All speakers of a split (sorted, deterministic)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out: list[Speaker] = []
    if include_librispeech:
        out += _librispeech_speakers(split)
    if include_espeak:
        out += espeak_speakers(split)
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _load_flac(path: str) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=1024)
def synthesize(voice: str, text: str, pitch: int = 50, speed_wpm: int = 165) -> np.ndarray:
    """espeak-ng speech at 16 kHz (espeak writes 22.05 kHz; ``--stdout`` has a bogus header)."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng): needed for synthetic voices")
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed_wpm), "-w", str(wav), text],
                       check=True, capture_output=True)
        x, sr = sf.read(str(wav), dtype="float32")
    return resample(x, sr)


def utterance(speaker: Speaker, rng: np.random.Generator, min_s: float) -> np.ndarray:
    """At least ``min_s`` seconds of this speaker's speech (utterances chained if short), normalised."""
    need = int(min_s * SAMPLE_RATE_HZ)
    parts: list[np.ndarray] = []
    total = 0
    while total < need:
        if speaker.source == "librispeech":
            x = _load_flac(speaker.files[rng.integers(len(speaker.files))])
        else:
            text = SENTENCES[rng.integers(len(SENTENCES))]
            x = synthesize(speaker.voice, text, speaker.pitch, speaker.speed_wpm)
        x = _trim_silence(x)
        parts.append(x)
        total += len(x)
        if total < need:  # a short natural pause between chained utterances
            gap = np.zeros(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE_HZ), np.float32)
            parts.append(gap)
            total += len(gap)
    y = np.concatenate(parts)
    start = int(rng.integers(0, len(y) - need + 1))
    return normalise_loudness(y[start:start + need])


def _trim_silence(x: np.ndarray, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading/trailing silence so a crop is mostly speech."""
    hop = 160
    n = len(x) // hop
    if n < 2:
        return x
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    on = np.nonzero(e > e.max() + floor_db)[0]
    return x[max(0, on[0] * hop - 800): min(len(x), (on[-1] + 1) * hop + 800)]
