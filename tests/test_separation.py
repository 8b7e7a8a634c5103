"""The separator: streaming equals offline, latency from an impulse, causality, the shipped model
leaves a lone voice nearly unchanged, and the ONNX engine matches torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.dsp import StreamingStft, stft
from engines.separation.separator_model import CausalSeparator, SeparatorConfig
from engines.separation.shipped_separator import AV_WEIGHTS
from engines.separation.streaming_separator import StreamingSeparator, compete

SMALL = SeparatorConfig(audio_dim=32, visual_dim=8, hidden=32)
needs_weights = pytest.mark.skipif(not AV_WEIGHTS.exists(), reason=f"{AV_WEIGHTS} not trained yet")


@pytest.fixture(scope="module")
def small_model() -> CausalSeparator:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return CausalSeparator(SMALL).eval()


def _lips(n_frames: int, faces: int = 2, seed: int = 0, dim: int = SMALL.lip_dim) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k + 1: rng.normal(size=(n_frames, dim)).astype(np.float32) for k in range(faces)}


def test_streaming_equals_offline(small_model) -> None:
    x = np.random.default_rng(1).normal(0, 0.1, 8000)
    frames = stft(x)
    lips = _lips(len(frames))
    whole = StreamingSeparator.from_model(small_model)
    ids, offline = whole.push(frames, lips)
    offline = np.concatenate([offline, whole.flush()[1]], axis=1)

    live = StreamingSeparator.from_model(small_model)
    pieces, i, sizes = [], 0, [1, 3, 7, 2, 5]
    while i < len(frames):
        n = sizes[len(pieces) % len(sizes)]
        ids_b, out = live.push(frames[i:i + n], {k: v[i:i + n] for k, v in lips.items()})
        pieces.append(out)
        i += n
    chunked = np.concatenate([*pieces, live.flush()[1]], axis=1)
    assert list(ids_b) == list(ids) == [1, 2]
    assert chunked.shape == offline.shape
    np.testing.assert_allclose(chunked, offline, atol=1e-4 * np.abs(offline).max())


def test_algorithmic_latency_from_an_impulse(small_model) -> None:
    """Push one sample at a time; the impulse's output sample must be out ≤ 32 ms after it went in."""
    n, at = 3200, 1600
    x = np.zeros(n)
    x[at] = 1.0
    analysis, engine = StreamingStft(), StreamingSeparator.from_model(small_model)
    lips = {1: np.zeros(16, np.float32)}
    released, latency = 0, None
    for i in range(n):
        frames = analysis.push(x[i:i + 1])
        if len(frames):
            _, out = engine.push(frames, lips)
            released += out.shape[1]
            if latency is None and released > at:
                latency = (i + 1) - (at + 1)  # samples taken in after the impulse before it came out
                assert np.abs(out[0]).max() > 0, "the impulse reaches the output"
    assert latency is not None
    assert latency <= 399, f"{latency} samples: more than one 25 ms window"
    assert latency * 1000 / 16000 <= 32.0


def test_network_has_no_look_ahead(small_model) -> None:
    """Changing the input from sample s on changes no output before the first window touching s."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.1, 6400)
    y = x.copy()
    s = 4000
    y[s:] += rng.normal(0, 0.3, len(y) - s)
    outs = []
    for sig in (x, y):
        frames = stft(sig)
        engine = StreamingSeparator.from_model(small_model)
        outs.append(engine.push(frames, _lips(len(frames), 1))[1][0])
    first_diff = int(np.flatnonzero(np.abs(outs[0] - outs[1]) > 1e-6)[0])
    assert first_diff >= s - 400, (first_diff, s)


def test_faces_come_and_go(small_model) -> None:
    frames = stft(np.random.default_rng(3).normal(0, 0.1, 4000))
    engine = StreamingSeparator.from_model(small_model)
    lips = _lips(len(frames), 3)
    ids, a = engine.push(frames[:5], {1: lips[1][:5]})
    ids, b = engine.push(frames[5:10], {1: lips[1][5:10], 2: lips[2][5:10]})
    assert list(ids) == [1, 2] and b.shape[1] == 5 * 160, "a new face joins on the same sample span"
    ids, c = engine.push(frames[10:12], {2: lips[2][10:12]})
    assert list(ids) == [2] and set(engine.faces) == {2}, "a face that left is dropped with its state"
    ids, d = engine.push(frames[12:14], {})
    assert d.size == 0 and not engine.faces


def test_faces_compete_for_each_bin() -> None:
    """A bin one face claims alone stays that face's; a bin both claim is split by their claims; one face on
    screen is never touched (a lone voice keeps its level)."""
    a = np.array([[[1.0 + 0j, 0.8, 0.6, 1e-4]]])   # face A's mask over 4 bins
    b = np.array([[[0.0 + 0j, 0.8, 0.2, 0.0]]])    # face B's
    both = compete(np.concatenate([a, b]), 1.0)
    np.testing.assert_allclose(both[0, 0, 0], 1.0)                   # A's alone: unchanged
    np.testing.assert_allclose(both[:, 0, 1], [0.8 / 2 ** 0.5] * 2)  # claimed equally: each its half of the power
    assert abs(both[0, 0, 2]) > 0.55 and abs(both[1, 0, 2]) < 0.07    # claimed unequally: the stronger keeps it
    assert np.all(np.abs(both) <= np.abs(np.concatenate([a, b])) + 1e-12), "competing only ever turns down"
    np.testing.assert_array_equal(compete(a, 1.0), a)
    np.testing.assert_array_equal(compete(np.concatenate([a, b]), 0.0), np.concatenate([a, b]))


def test_competing_faces_stream_as_they_run_offline(small_model) -> None:
    """Competition is per frame, so cutting the stream into blocks still changes nothing."""
    x = np.random.default_rng(4).normal(0, 0.1, 4000)
    frames, lips = stft(x), _lips(len(stft(x)))
    whole = StreamingSeparator.from_model(small_model, competition=1.0)
    _, offline = whole.push(frames, lips)
    live, pieces = StreamingSeparator.from_model(small_model, competition=1.0), []
    for i in range(0, len(frames), 4):
        pieces.append(live.push(frames[i:i + 4], {k: v[i:i + 4] for k, v in lips.items()})[1])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), offline, atol=1e-4 * np.abs(offline).max())
    _, alone = StreamingSeparator.from_model(small_model, competition=0.0).push(frames, lips)
    assert not np.allclose(alone, offline), "two faces: competing changes what each gets"


class FixedVoices:
    """An audio-only step that always splits the spectrum the same way: voice A below bin 100, voice B above."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, inputs):
        self.calls += 1
        t, f = inputs["mixture"].shape[1:3]
        low = (np.arange(f) < 100).astype(np.float32)
        mask = np.zeros((1, t, 2, f, 2), np.float32)
        mask[0, :, 0, :, 0], mask[0, :, 1, :, 0] = low, 1 - low
        return {"mask": mask, "gru_state_out": inputs["gru_state"] + 1}


def test_two_faces_take_the_audio_only_voice_their_av_masks_point_at() -> None:
    """Each of two faces gets blend × the audio-only voice its own AV mask resembles (whatever the order of the
    network's outputs) + (1 − blend) × its AV mask; one face keeps its AV mask untouched."""
    from engines.separation.two_voice_blend import TwoVoiceBlend

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(20, 257)) + 1j * rng.normal(size=(20, 257))
    high = (np.arange(257) >= 100).astype(float)
    av = np.stack([0.2 + 0.6 * high, 0.8 - 0.6 * high])[:, None, :].repeat(20, axis=1).astype(complex)  # face 1 ≈ B
    blend = TwoVoiceBlend(FixedVoices(), (1, 1, 8), blend=0.7)
    out = blend(frames, av, [1, 2])
    np.testing.assert_allclose(out[0], 0.7 * high + 0.3 * av[0])       # face 1 took voice B (the network's 2nd)
    np.testing.assert_allclose(out[1], 0.7 * (1 - high) + 0.3 * av[1])
    assert blend.evidence < 0 and np.all(blend.state == 1), "the evidence and the network's state carry on"
    np.testing.assert_array_equal(blend(frames, av[:1], [1]), av[:1])
    assert blend.pair is None and blend.evidence == 0, "one face: the pair is forgotten"
    three = np.concatenate([av, av[:1]])
    np.testing.assert_array_equal(blend(frames, three, [1, 2, 3]), three)
    assert blend.pair is None, "three faces at once: no pair to follow"
    with pytest.raises(ValueError, match="blend"):
        TwoVoiceBlend(FixedVoices(), (1, 1, 8), blend=1.5)


def test_the_assignment_probe_reads_the_blends_choice_without_changing_it() -> None:
    """The lab probe's blend returns exactly the engine's masks and records, per frame, whether the audio-only
    voices went over crossed — here first straight (face 1's AV mask points at voice A), then, after the AV masks
    turn round and the evidence changes sign, crossed; a block without a pair records nothing. Its tally weighs
    frames by the truth's size and counts what goes against the clip's overall choice."""
    from engines.separation.two_voice_blend import TwoVoiceBlend
    from lab.real_faces.assignment_probe import RecordingBlend, tally

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(20, 257)) + 1j * rng.normal(size=(20, 257))
    low = (np.arange(257) < 100).astype(float)
    av = np.stack([0.2 + 0.6 * low, 0.8 - 0.6 * low])[:, None, :].repeat(20, axis=1).astype(complex)
    engine, probe = (cls(FixedVoices(), (1, 1, 8), blend=0.7) for cls in (TwoVoiceBlend, RecordingBlend))
    for block in (av, av[::-1], av[::-1], av[::-1]):
        np.testing.assert_array_equal(probe(frames, block, [1, 2]), engine(frames, block, [1, 2]))
    crossed = np.concatenate(probe.crossed)
    assert not crossed[:20].any() and crossed[-20:].all(), "straight while face 1 points at voice A, then crossed"
    assert np.concatenate(probe.voice_diff).shape == (80, 257)
    probe(frames, av[:1], [1])
    assert len(probe.crossed) == 4, "one face: no pair, nothing recorded"
    right, weight, against = tally(np.array([False, False, True, True]), np.array([3.0, -1.0, -2.0, 0.5]),
                                   edges=(0, 2, None))
    np.testing.assert_allclose(right, [3.0, 2.0])
    np.testing.assert_allclose(weight, [4.0, 2.5])
    assert against == 3.0  # the clip's truth sums to +0.5 (straight): the two crossed frames go against it


def test_the_clean_voices_evidence_hands_each_face_its_own_voice() -> None:
    """The probe's upper bound: judged by the clean voices' ideal masks, the blend gives face 0 the audio-only
    voice that carries face 0's sound (here the network's second, high-band output), and refuses to let those
    ideal masks be heard (blend other than 1)."""
    from engines.dsp import istft, stft
    from lab.real_faces.assignment_probe import CleanEvidenceBlend, ideal_masks

    rng = np.random.default_rng(3)
    noise = stft(rng.normal(0, 0.1, 8000))
    bins = np.arange(noise.shape[1])
    high, low = (istft(noise * (keep[None, :])) for keep in (bins >= 120, bins < 80))
    n = min(len(high), len(low))
    refs, mix = [high[:n], low[:n]], high[:n] + low[:n]
    blend = CleanEvidenceBlend(FixedVoices(), (1, 1, 8))
    blend.hear(ideal_masks(refs, mix))
    frames = stft(mix)
    out = blend(frames, np.zeros((2, len(frames), frames.shape[1]), complex), [0, 1])
    np.testing.assert_allclose(out[0].real, np.broadcast_to((bins >= 100).astype(float), out[0].shape))
    np.testing.assert_allclose(out[1].real, np.broadcast_to((bins < 100).astype(float), out[1].shape))
    with pytest.raises(ValueError, match="blend must be 1"):
        CleanEvidenceBlend(FixedVoices(), (1, 1, 8), blend=0.7)


def test_two_voice_blend_follows_its_pair_through_a_split_track() -> None:
    """A tracker that gives a person a new id, or a third id for a moment, must not cost the pair its voices: while
    both faces are on screen the pair goes on (the third face keeps its AV mask); when one is replaced the one that
    stayed keeps its voice, whichever row it moves to; two new faces start afresh."""
    from engines.separation.two_voice_blend import TwoVoiceBlend

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(20, 257)) + 1j * rng.normal(size=(20, 257))
    high = (np.arange(257) >= 100).astype(float)
    av = np.stack([0.2 + 0.6 * high, 0.8 - 0.6 * high])[:, None, :].repeat(20, axis=1).astype(complex)
    neutral = np.full((1, 20, 257), 0.5, complex)  # an AV mask that favours neither voice
    blend = TwoVoiceBlend(FixedVoices(), (1, 1, 8), blend=0.7)
    blend(frames, av, [1, 2])  # face 1 ↔ voice B, face 2 ↔ voice A
    three = blend(frames, np.concatenate([av, neutral]), [1, 2, 3])
    np.testing.assert_allclose(three[0], 0.7 * high + 0.3 * av[0])
    np.testing.assert_array_equal(three[2], neutral[0])  # the third face: its AV mask alone
    assert blend.pair == (1, 2)
    kept = blend(frames[:2], np.concatenate([av[:1, :2], neutral[:, :2]]), [1, 5])  # face 2 became face 5
    np.testing.assert_allclose(kept[0], 0.7 * high + 0.3 * av[0, :2])  # face 1 keeps voice B
    np.testing.assert_allclose(kept[1], 0.7 * (1 - high) + 0.3 * neutral[0, :2])  # the newcomer takes A
    moved = blend(frames[:2], np.concatenate([neutral[:, :2], av[:1, :2]]), [0, 1])  # face 0 arrives before face 1
    np.testing.assert_allclose(moved[1], 0.7 * high + 0.3 * av[0, :2])  # face 1, now row 1, still has voice B
    blend(frames[:2], av[::-1, :2], [7, 8])  # face 7 ≈ voice A: the opposite of what face 1 had built up
    assert blend.pair == (7, 8) and blend.evidence > 0, "two new faces: their own evidence from the start"


def test_two_voices_stream_as_they_run_offline(small_model) -> None:
    """The audio-only network's state and the assignment evidence carry across blocks: cutting the stream
    changes nothing, and the blend does change what two faces get."""
    from engines.separation.crn_model import CrnConfig, CrnSeparator
    from engines.separation.two_voice_blend import TwoVoiceBlend

    torch.manual_seed(1)
    audio_only = CrnSeparator(CrnConfig(n_masks=2, lip_dim=0)).eval()
    x = np.random.default_rng(5).normal(0, 0.1, 4000)
    frames, lips = stft(x), _lips(len(stft(x)))

    def engine(blend: float) -> StreamingSeparator:
        return StreamingSeparator.from_model(small_model, two_voices=TwoVoiceBlend.from_model(audio_only, blend))

    _, offline = engine(0.7).push(frames, lips)
    live, pieces = engine(0.7), []
    for i in range(0, len(frames), 3):
        pieces.append(live.push(frames[i:i + 3], {k: v[i:i + 3] for k, v in lips.items()})[1])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), offline, atol=1e-4 * np.abs(offline).max())
    _, av_alone = StreamingSeparator.from_model(small_model).push(frames, lips)
    np.testing.assert_array_equal(engine(0.0).push(frames, lips)[1], av_alone)
    assert not np.allclose(offline, av_alone)


@needs_weights
def test_single_voice_passes_nearly_unchanged() -> None:
    """A clip with one talking face and no noise: the output should be the input, almost — at its loudness too
    (SI-SDR cannot see a level: separators before session 11 handed a lone voice back ~10 dB quieter)."""
    from dataclasses import replace

    from lab.corpus.generate import default_config, make_clip
    from lab.separation.separation_samples import face_lip_streams
    from lab.separation.eval_separator import separate_av, si_sdr
    from engines.separation.shipped_separator import av

    # a drawn face at the size the demo has, through the live front end (mesh + lip encoder)
    config = replace(default_config("separation"), num_speakers=(1,), include_librispeech=False,
                     noise_prob=0.0, photo_prob=0.0, degrade=False, duration_s=2.0, width=640, height=360)
    clip = make_clip("separation", 7, config)
    lips, found = face_lip_streams(clip)
    assert found > 0.5  # the face mesh believes a drawn face is a face in ~60 % of frames (real faces: > 99 %)
    out = separate_av(av(), clip.mixture, lips)[0]
    quality = float(si_sdr(out[None], clip.mixture[None])[0])
    assert quality > 10.0, f"single voice SI-SDR vs input {quality:.1f} dB"
    from lab.real_faces.train_separator import voice_gain_db

    level = voice_gain_db(out, clip.mixture)
    assert abs(level) < 3.0, f"single voice comes out at {level:+.1f} dB re. the input"


@needs_weights
def test_onnx_engine_matches_torch() -> None:
    from engines.loader import load
    from engines.models import get
    from engines.separation.shipped_separator import av

    spec = get("separator")
    if not spec.onnx_path.exists():
        pytest.skip("separator.onnx not exported")
    frames = stft(np.random.default_rng(4).normal(0, 0.1, 4800))
    lips = _lips(len(frames), 2, dim=64)  # the lip encoder's embedding size
    onnx_engine = load("separator", backend="onnxruntime", threads=1)
    a = StreamingSeparator.from_engine(onnx_engine)
    b = StreamingSeparator.from_model(av())
    outs = []
    for engine in (a, b):
        pieces = [engine.push(frames[i:i + 4], {k: v[i:i + 4] for k, v in lips.items()})[1]
                  for i in range(0, len(frames), 4)]
        outs.append(np.concatenate(pieces, axis=1))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-3 * np.abs(outs[1]).max())


def test_silent_leak_measures_output_while_the_face_is_silent() -> None:
    from lab.separation.eval_separator import LEAK_FLOOR_DB, silent_leak_db

    rng = np.random.default_rng(0)
    a = np.r_[rng.normal(0, 1, 16000), np.zeros(16000)]  # face A speaks first, then is silent
    b = np.r_[np.zeros(16000), rng.normal(0, 1, 16000)]
    mix = a + b
    assert silent_leak_db(mix, a, mix) == pytest.approx(0.0)  # passing the mixture through leaks all
    assert silent_leak_db(0.1 * mix, a, mix) == pytest.approx(-20.0)
    assert silent_leak_db(a, a, mix) == LEAK_FLOOR_DB  # perfect isolation, floored
    assert silent_leak_db(a, mix, mix) is None  # never silent: nothing to measure


@needs_weights
def test_registry_state_shapes_match_the_shipped_weights() -> None:
    """The export and every engine take the state shape from the registry: it must be the shipped network's."""
    from engines.models import get
    from engines.separation.shipped_separator import AUDIO_ONLY_WEIGHTS, load_checkpoint

    for name, path in (("separator", AV_WEIGHTS), ("separator_audio_only", AUDIO_ONLY_WEIGHTS)):
        _, state = load_checkpoint(path).model().initial_state(1)
        declared = {t.name: t.example_shape for t in get(name).inputs}["gru_state"]
        assert declared == tuple(state.shape), f"{name}: registry {declared}, {path.name} {tuple(state.shape)}"
