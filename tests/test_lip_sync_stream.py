"""The live lip-sync audio path (`engines/localization/speaking_face.SyncAudio`) against what training saw.

The sync pair was trained on whole-clip log-mel windows (`lab/real_faces`); live, the stft node's frames
arrive in blocks of any size, with gaps. These tests hold the live path to the training numbers."""

from __future__ import annotations

import numpy as np
import pytest

from engines.dsp import StftConfig, stft
from engines.faces.sync_audio_encoder import MARGIN, MEL_PER_FRAME, sync_logmel
from engines.loader import load
from engines.localization.speaking_face import SpeakingFace, SpeakingFaceConfig, SyncAudio, unit


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts under a syllable-rate envelope: enough structure for the encoder to react to."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.random(int(seconds * 5)) > 0.4, 16000 // 5)[:n].astype(np.float32)
    return (rng.normal(0, 0.1, n) * np.pad(env, (0, n - len(env)))).astype(np.float32)


@pytest.fixture(scope="module")
def engine():
    return load("sync_audio", "onnxruntime", threads=1)


def test_sync_logmel_is_the_training_log_mel() -> None:
    pytest.importorskip("torch")
    from lab.real_faces.real_data import log_mel

    audio = speechlike(2.0, 0)
    frames = 40
    want = log_mel(audio, frames)
    got = sync_logmel(stft(audio, StftConfig()))[:len(want)]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3


def test_blocks_of_any_size_give_the_same_embeddings(engine) -> None:
    spec = stft(speechlike(3.0, 1), StftConfig()).astype(np.complex64)
    whole = SyncAudio(engine).push(spec, 0)
    stream, blocks = SyncAudio(engine), []
    i, rng = 0, np.random.default_rng(2)
    while i < len(spec):
        k = int(rng.integers(1, 13))
        blocks += stream.push(spec[i:i + k], i)
        i += k
    assert [g for g, _ in blocks] == [g for g, _ in whole] == list(range(len(whole)))
    assert np.allclose(np.stack([e for _, e in blocks]), np.stack([e for _, e in whole]), atol=1e-5)
    # a group is released once its look-ahead is heard: the last needs MARGIN mel frames after it
    assert MEL_PER_FRAME * len(whole) + MARGIN <= len(spec) < MEL_PER_FRAME * (len(whole) + 1) + MARGIN


def test_an_embedding_ignores_audio_beyond_its_look_ahead(engine) -> None:
    audio = speechlike(3.0, 3)
    spec = stft(audio, StftConfig()).astype(np.complex64)
    g = 30
    cut = MEL_PER_FRAME * (g + 1) + MARGIN  # the mel frames group g may see
    a = dict(SyncAudio(engine).push(spec, 0))
    changed = spec.copy()
    changed[cut:] = 0.5 * np.exp(1j * np.random.default_rng(4).uniform(0, 6.3, changed[cut:].shape))
    b = dict(SyncAudio(engine).push(changed, 0))
    assert np.allclose(a[g], b[g], atol=1e-6)
    assert not np.allclose(a[g + 8], b[g + 8], atol=1e-3)


def test_lost_frames_are_filled_not_shifted(engine) -> None:
    spec = stft(speechlike(3.0, 5), StftConfig()).astype(np.complex64)
    s = SyncAudio(engine)
    first = s.push(spec[:100], 0)
    later = s.push(spec[140:], 140)  # 40 frames never arrived
    groups = [g for g, _ in first + later]
    assert groups == list(range(len(groups)))  # numbering follows the stream, not the frames received
    assert MEL_PER_FRAME * len(groups) + MARGIN <= len(spec)


def test_the_face_whose_lips_follow_the_audio_is_chosen() -> None:
    rng = np.random.default_rng(6)
    sf = SpeakingFace(SpeakingFaceConfig(threshold=0.3, margin=0.1))
    for g in range(40):
        a = unit(rng.normal(size=64).astype(np.float32))
        t = g * 40_000_000
        sf.add_audio(t + 20_000_000, a)
        sf.add_lips(t + 15_000_000, [3, 8], np.stack([a + 0.03 * rng.normal(size=64), rng.normal(size=64)]))
    scores = sf.scores()
    assert scores[3] > 0.8 and abs(scores[8]) < 0.3
    assert sf.speaker() == (3, pytest.approx(scores[3]))
    quiet = SpeakingFace(SpeakingFaceConfig(threshold=0.99))
    quiet.audio, quiet.lips = sf.audio, sf.lips
    assert quiet.speaker() == (-1, 0.0)  # below the threshold nobody is called speaking
