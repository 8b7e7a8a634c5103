"""Issue 17: whose voice the speaker and virtual-microphone sinks play follows a live choice (a
click in the browser view, through a shared VoiceChoice), at the next block, crossfaded.

At the sink level with plain arrays: two voices that are pure tones of different pitch, so what
plays is told by its dominant frequency; the switch must be exact outside a short crossfade and
continuous inside it (a hard switch between the two tones is a step, heard as a click). Then
the renderer wiring: a click on the browser view's URL changes what the speakers are given and
the heartbeat counters. Last, the real virtual microphone on the PulseAudio stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
import urllib.request

import numpy as np
import pytest

from media.sinks import SpeakerSink, VirtualMicSink, voice_track
from media.sinks.sink import VoiceChoice
from tests.pulse import PulseServer, pulse  # noqa: F401  (fixture, for the last test)

SR = 16000
BLOCK = 160  # 10 ms, as the separator sends them
A_HZ, B_HZ, AMP = 440.0, 1320.0, 0.3


def voices(seconds: float) -> dict[int, np.ndarray]:
    """Face 3 sings A (a sine), face 7 sings B (a cosine: at the switch points used below it is at
    its peak while A is near zero, so a hard switch would jump by ~AMP)."""
    t = np.arange(round(seconds * SR)) / SR
    return {3: (AMP * np.sin(2 * np.pi * A_HZ * t)).astype(np.float32),
            7: (AMP * np.cos(2 * np.pi * B_HZ * t)).astype(np.float32)}


class Recorder:
    """Stands in for the sound card: keeps a copy of what is written, and where it was written from."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.addresses: list[int] = []

    def write(self, samples: np.ndarray) -> None:
        self.blocks.append(np.array(samples))
        self.addresses.append(samples.__array_interface__["data"][0])

    def close(self) -> None:
        pass

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks)


def speaker(choice: VoiceChoice, play_track: int = 3) -> tuple[SpeakerSink, Recorder]:
    sink = SpeakerSink(None, SR, play_track, choice)
    sink.output = Recorder()  # no sound card: the sink's mix is what is checked
    return sink, sink.output


def play(sink: SpeakerSink, tracks: dict[int, np.ndarray], at_block: dict[int, object] | None = None) -> None:
    """Feed ``tracks`` in 10 ms blocks; ``at_block[k]()`` runs before block k (a click)."""
    for k, start in enumerate(range(0, len(tracks[3]), BLOCK)):
        if at_block and k in at_block:
            at_block[k]()
        sink.audio({voice_track(i): v[start:start + BLOCK] for i, v in tracks.items()}, start)


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spectrum)])


def band_rms(x: np.ndarray, hz: float) -> float:
    """Level of the component near ``hz`` (±20 Hz), from the spectrum."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    return float(np.sqrt(np.sum(spectrum[np.abs(np.fft.rfftfreq(len(x), 1 / SR) - hz) < 20] ** 2)))


def step_bound(*xs: np.ndarray, fade: int, summed: bool = False) -> float:
    """The largest sample-to-sample step a crossfade of ``xs`` can make: the voices' own steepest
    step (the sum of theirs where they play together), plus each voice's gain changing by 1/fade
    per sample."""
    steps = [float(np.abs(np.diff(x)).max()) for x in xs]
    return (sum(steps) if summed else max(steps)) + sum(float(np.abs(x).max()) for x in xs) / fade + 1e-6


def test_a_choice_switches_the_voice_at_the_next_block_with_a_short_continuous_crossfade() -> None:
    choice, tracks = VoiceChoice("face 3"), voices(1.0)
    sink, out = speaker(choice)
    switch = 50 * BLOCK  # the click comes before block 50
    play(sink, tracks, {50: lambda: choice.clicked(7)})
    heard, fade = out.samples, sink.fade_samples
    a, b = tracks[3], tracks[7]
    assert fade == round(0.015 * SR)  # 15 ms
    assert np.array_equal(heard[:switch], a[:switch])  # face 3 (the default) until the click
    assert np.array_equal(heard[switch + fade:], b[switch + fade:])  # then exactly face 7
    assert dominant_hz(heard[:switch]) == pytest.approx(A_HZ, abs=5)
    assert dominant_hz(heard[switch + fade:]) == pytest.approx(B_HZ, abs=5)
    # the crossfade: within those 15 ms, bounded by the two voices, and continuous
    blend = heard[switch:switch + fade]
    assert np.abs(blend).max() <= 2 * AMP
    bound = step_bound(a, b, fade=fade)
    assert np.abs(np.diff(heard)).max() <= bound
    assert abs(b[switch] - a[switch - 1]) > 2 * bound  # (a hard switch here would be a step: the test can tell)
    assert sink.stats()["voice_switches"] == 1


def test_clicking_the_face_again_goes_back_to_the_default_and_a_change_mid_fade_stays_continuous() -> None:
    choice, tracks = VoiceChoice("face 3"), voices(1.0)
    sink, out = speaker(choice)
    # face 7 at block 20; back to the default at block 60; face 7 at 80 and back at 81, inside that fade
    play(sink, tracks, {20: lambda: choice.clicked(7), 60: lambda: choice.clicked(7),
                        80: lambda: choice.clicked(7), 81: lambda: choice.clicked(None)})
    heard, fade, a, b = out.samples, sink.fade_samples, tracks[3], tracks[7]
    assert np.array_equal(heard[20 * BLOCK + fade:60 * BLOCK], b[20 * BLOCK + fade:60 * BLOCK])
    assert np.array_equal(heard[60 * BLOCK + fade:80 * BLOCK], a[60 * BLOCK + fade:80 * BLOCK])
    # the interrupted fade turns back from where it was: face 7 got to 160/240 and goes down as fast
    assert np.array_equal(heard[82 * BLOCK:], a[82 * BLOCK:])
    assert np.abs(np.diff(heard)).max() <= step_bound(a, b, fade=fade)
    assert choice.tracks == frozenset() and sink.stats()["voice_switches"] == 4


def test_shift_click_sums_the_chosen_voices() -> None:
    choice, tracks = VoiceChoice(), voices(1.0)
    sink, out = speaker(choice, play_track=-1)  # default: the loudest (3 and 7 are as loud: either, by block)
    play(sink, tracks, {30: lambda: choice.clicked(7), 60: lambda: choice.clicked(3, add=True)})
    heard, fade, a, b = out.samples, sink.fade_samples, tracks[3], tracks[7]
    assert np.array_equal(heard[30 * BLOCK + fade:60 * BLOCK], b[30 * BLOCK + fade:60 * BLOCK])
    both = heard[60 * BLOCK + fade:]
    np.testing.assert_allclose(both, (a + b)[60 * BLOCK + fade:], atol=1e-6)
    spectrum = np.abs(np.fft.rfft(both * np.hanning(len(both))))
    freqs = np.fft.rfftfreq(len(both), 1 / SR)
    top_two = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top_two == pytest.approx([A_HZ, B_HZ], abs=5)
    assert np.abs(np.diff(heard)).max() <= step_bound(a, b, fade=fade, summed=True)


def test_a_block_allocates_no_audio_memory() -> None:
    """Every block is mixed into the same buffer, switches included (the outputs copy it)."""
    choice, tracks = VoiceChoice(), voices(0.5)
    sink, out = speaker(choice)
    play(sink, tracks, {10: lambda: choice.clicked(7), 11: lambda: choice.clicked(3, add=True),
                        30: lambda: choice.clicked(None)})
    assert len(set(out.addresses)) == 1 and len(out.blocks) == 50


def test_a_chosen_face_without_a_voice_plays_silence_and_the_mixture_rule_is_unchanged() -> None:
    choice = VoiceChoice()
    sink, out = speaker(choice, play_track=-1)
    mixture = voices(0.1)[3]
    sink.audio({"mixture": mixture[:BLOCK]}, 0)  # no voice yet: the mixture
    assert np.array_equal(out.blocks[-1], mixture[:BLOCK])
    choice.clicked(5)  # a face the separator gives no voice
    play(sink, voices(0.1))
    assert np.abs(out.blocks[-1]).max() == 0 and out.blocks[-1].size == BLOCK  # silence, keeping time


class FakePacat:
    """The virtual microphone's writer without PulseAudio: a real process on the other end of a real pipe
    (``cat``, which takes everything at once; ``sleep``, which takes nothing, as a stalled sound server)."""

    def __init__(self, command: tuple[str, ...] = ("cat",)) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.stdin, self.chunks = self.proc.stdin, []
        self.reader = threading.Thread(target=lambda: self.chunks.extend(iter(lambda: self.proc.stdout.read1(65536), b"")),
                                       daemon=True)
        self.reader.start()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()

    def heard(self) -> np.ndarray:
        """Close the pipe and return everything that came out of it."""
        self.stdin.close()
        self.reader.join(10)
        self.proc.wait(10)
        return np.frombuffer(b"".join(self.chunks), "<f4")


def test_the_virtual_microphone_follows_the_choice_too() -> None:
    choice, tracks = VoiceChoice("face 3"), voices(1.0)
    mic = VirtualMicSink("earshot_test", SR, play_track=3, choice=choice, max_backlog_ms=2000)
    mic.proc = FakePacat()  # (not opened: no PulseAudio needed for its mix)
    mic._bound_pipe()
    play(mic, tracks, {50: lambda: choice.clicked(7)})
    heard = mic.proc.heard()
    assert np.array_equal(heard[:50 * BLOCK], tracks[3][:50 * BLOCK])
    assert np.array_equal(heard[50 * BLOCK + mic.fade_samples:], tracks[7][50 * BLOCK + mic.fade_samples:])
    assert mic.stats()["voice_switches"] == 1 and mic.stats()["dropped_s"] == 0
    mic.proc = None


def test_a_stalled_sound_server_costs_dropped_blocks_not_a_late_call(caplog: pytest.LogCaptureFixture) -> None:
    """A pacat that takes nothing (a sound server that stalls, as a fresh null sink does for ~2 s): the
    renderer's writes never block, at most ``max_backlog_ms`` waits in the pipe, the rest is dropped,
    counted, and logged in one line — the call would hear the next voice on time, not seconds late."""
    tracks = voices(1.0)
    mic = VirtualMicSink("earshot_test", SR, play_track=3, max_backlog_ms=60)
    mic.proc = FakePacat(("sleep", "30"))
    mic._bound_pipe()
    start = time.monotonic()
    play(mic, tracks)
    took = time.monotonic() - start
    backlog = mic.backlog_bytes()
    stats = mic.stats()
    mic.proc.kill()
    mic.proc = None
    mic.close()
    assert took < 0.5, f"1 s of blocks took {took:.2f} s to hand over: the writes blocked"
    assert 0 < backlog <= mic.max_backlog_bytes
    assert stats["audio_s_played"] == pytest.approx(backlog / 4 / SR, abs=1e-3)
    assert stats["audio_s_played"] + stats["dropped_s"] == pytest.approx(1.0, abs=1e-3)
    lines = [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()]
    assert len(lines) == 1 and "ms of audio dropped" in lines[0], lines


def test_a_click_in_the_renderers_view_changes_what_its_speakers_play(monkeypatch: pytest.MonkeyPatch) -> None:
    from nodes.renderer import Renderer
    from pipeline.harness import Harness
    from pipeline.messages import FaceTracks, SeparatedAudio, VideoFrame

    recorders: list[Recorder] = []

    def fake_output(device: object = None, sample_rate_hz: int = SR) -> Recorder:
        recorders.append(Recorder())
        return recorders[-1]

    monkeypatch.setitem(sys.modules, "media.audio_device", types.SimpleNamespace(AudioOutput=fake_output))
    tracks = voices(0.4)

    def click(url: str, x: float, y: float) -> dict:
        req = urllib.request.Request(url + "choice", json.dumps({"x": x, "y": y}).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            return json.loads(reply.read())

    with Harness(Renderer, {"web_port": 0, "audio_out": True}, wired={"video", "faces", "voices"}) as h:
        url = h.node.sinks["web"].url
        h.feed("faces", FaceTracks(boxes=np.array([[10, 10, 50, 60], [80, 10, 150, 100]], np.float32),
                                   track_ids=np.array([3, 7]), lip_features=np.zeros((2, 4), np.float32),
                                   frame_width=160, frame_height=120, capture_ns=h.epoch_ns))
        h.feed("video", VideoFrame(image=np.zeros((120, 160, 3), np.uint8), frame_index=0, capture_ns=h.epoch_ns))
        assert h.node.counters["voice_choice.faces"] == 0 and h.node.counters["voice_choice.track"] == -1

        def feed_voices(first: int, last: int) -> None:
            for start in range(first, last, BLOCK):
                h.feed("voices", SeparatedAudio(samples=np.stack([tracks[3][start:start + BLOCK],
                                                                  0.5 * tracks[7][start:start + BLOCK]]),
                                                track_ids=np.array([3, 7]), first_sample=start,
                                                capture_ns=h.epoch_ns + start * 1_000_000_000 // SR))

        feed_voices(0, 20 * BLOCK)  # the default: the loudest, face 3
        assert click(url, 120, 80)["label"] == "face 7"
        feed_voices(20 * BLOCK, 40 * BLOCK)
        heard = recorders[0].samples
        assert dominant_hz(heard[:20 * BLOCK]) == pytest.approx(A_HZ, abs=5)
        assert np.array_equal(heard[20 * BLOCK + 240:], 0.5 * tracks[7][20 * BLOCK + 240:40 * BLOCK])
        counters = h.node.counters
        assert (counters["voice_choice.faces"], counters["voice_choice.track"], counters["voice_choice.changes"]) \
            == (1, 7, 1)
        assert counters["speaker.voice_switches"] == 1 and counters["web.clicks"] == 1
        assert click(url, 70, 110)["tracks"] == []  # beside the faces: back to the loudest
        h.node.tick()
        assert (counters["voice_choice.faces"], counters["voice_choice.track"]) == (0, -1)


def test_the_choice_is_heard_from_the_virtual_microphone(pulse: PulseServer) -> None:
    """On the PulseAudio stand-in: what a call app records from the "earshot" source turns from
    face 3's voice to face 7's when face 7 is chosen."""
    from media.sinks.virtual_mic import short_names

    choice, tracks = VoiceChoice("face 3"), voices(1.6)
    mic = VirtualMicSink("earshot_choice_test", SR, play_track=3, choice=choice)
    assert mic.open()
    try:
        assert "earshot_choice_test" in short_names("sources")
        recorder = subprocess.Popen(["parec", "--raw", "--format=float32le", f"--rate={SR}", "--channels=1",
                                     "--latency-msec=10", "--device=earshot_choice_test"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=pulse.env())
        chunks: list[bytes] = []
        reader = threading.Thread(
            target=lambda: [chunks.append(c) for c in iter(lambda: recorder.stdout.read1(4096), b"")], daemon=True)
        reader.start()
        time.sleep(0.3)  # the recorder is connected before the voice starts
        start_s = time.monotonic()
        for k, start in enumerate(range(0, len(tracks[3]), BLOCK)):  # paced as the renderer gets them
            if k == 80:
                choice.clicked(7)
            mic.audio({voice_track(i): v[start:start + BLOCK] for i, v in tracks.items()}, start)
            time.sleep(max(0.0, start_s + (k + 1) * 0.01 - time.monotonic()))
        time.sleep(1.0)  # on a loaded machine the monitor may deliver late
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(map(len, chunks)) < 4 * (len(tracks[3]) + SR // 2):
            time.sleep(0.2)
        recorder.terminate()
        recorder.wait(5)
        reader.join(5)
        recorder.stdout.close()
    finally:
        mic.close()
    raw = b"".join(chunks)
    heard = np.frombuffer(raw[:len(raw) // 4 * 4], np.float32)
    loud = np.flatnonzero(np.abs(heard) > 0.05)
    assert loud.size, "nothing came out of the virtual microphone"
    first, last = loud[0], loud[-1]
    assert last - first > 1.2 * SR, f"only {(last - first) / SR:.2f} s came out"
    # judged by the level near each pitch (a loaded machine's monitor may drop a few ms, which smears a
    # spectrum's peak but not which voice it is)
    before, after = heard[first + SR // 10:first + SR // 2], heard[last - SR // 2:last - SR // 10]
    assert band_rms(before, A_HZ) > 10 * band_rms(before, B_HZ)  # face 3, before the click
    assert band_rms(after, B_HZ) > 10 * band_rms(after, A_HZ)  # face 7, after it
    assert "earshot_choice_test" not in short_names("sources")
