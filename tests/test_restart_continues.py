"""A node killed with -9 and restarted by the supervisor continues (issue 15): its sequence numbers
go on (its readers count what it never sent as lost), a file source goes on at the graph's clock
(or, lossless, right after its last frame), and the renderer's MP4 and WAVs go on in the same files.

The graphs run under the real supervisor, in processes, on a loaded machine: timeouts are generous
and only what the design promises is asserted, not how fast it happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.graph import load_graph
from pipeline.messages import AudioChunk, VideoFrame
from pipeline.node import Input, Node
from tests.graphs import Background, write_graph
from tests.runtime_nodes import REGISTRY, read_records

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "demo" / "demo.mp4"  # 9 s, 25 fps, 16 kHz audio


class Taker(Node):
    """Writes what it receives (seq, media position, capture time, arrival) as JSON lines;
    ``delay_s`` per video frame makes a slow reader (lossless: it paces the sources)."""

    @dataclass
    class Params:
        path: str = ""
        delay_s: float = 0.0

    inputs = {"frames": Input(VideoFrame, policy="queue", size=64),
              "audio": Input(AudioChunk, policy="queue", size=512)}

    def open(self) -> None:
        self.file = open(self.params.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def on_message(self, port: str, msg) -> None:
        position = msg.pts_s if port == "frames" else msg.first_sample
        self.file.write(json.dumps({"port": port, "seq": msg.seq, "at": position,
                                    "index": getattr(msg, "frame_index", 0), "capture_ns": msg.capture_ns,
                                    "arrived_ns": time.monotonic_ns()}) + "\n")
        if port == "frames" and self.params.delay_s:
            time.sleep(self.params.delay_s)

    def close(self) -> None:
        self.file.close()


NODES = {**REGISTRY, "taker": f"{__name__}:Taker", "camera": "nodes.camera:Camera",
         "microphone": "nodes.microphone:Microphone"}


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def kill(sup, *names: str) -> None:
    """SIGKILL nodes at once; wait until the supervisor has each running again."""
    victims = {name: sup.nodes[name].proc.pid for name in names}
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    for name, victim in victims.items():
        assert wait_for(lambda: sup.nodes[name].restarts >= 1 and sup.nodes[name].state == "running"
                        and sup.nodes[name].proc.pid != victim, 90), f"{name} did not come back"


def lost(sup, node: str, port: str) -> int:
    return sup.nodes[node].stats.get("inputs", {}).get(port, {}).get("lost", 0)


def split(records: list[dict], port: str) -> tuple[list[dict], list[dict]]:
    """A port's records from the killed process and from the restarted one: split at the biggest
    jump of the sequence numbers, which the restart makes (a reader may still be taking the old
    process's last messages after the kill, so the time of the kill cannot tell them apart)."""
    mine = [r for r in records if r.get("port") == port]
    jumps = [b["seq"] - a["seq"] for a, b in zip(mine, mine[1:])]
    at = jumps.index(max(jumps)) + 1 if jumps else len(mine)
    return mine[:at], mine[at:]


# -- sequence numbers carry on --------------------------------------------------------------------

def test_a_restarted_node_numbers_on_and_its_reader_counts_what_it_never_sent(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rate_hz = 50
    graph = load_graph(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": rate_hz}},
        "rec": {"type": "taker", "params": {"path": str(rec)}, "inputs": {"frames": "src/frames"}},
    }, settings={"restart_backoff_s": 0.2, "heartbeat_s": 0.2}), NODES)
    with Background(graph, timeout_s=180) as sup:
        assert wait_for(lambda: len(read_records(rec)) > 80), "no frames flowed"  # > 1 s: its rate is known
        kill(sup, "src")
        n = len(read_records(rec))
        assert wait_for(lambda: len(read_records(rec)) > n + 30), "output did not resume"
        assert wait_for(lambda: lost(sup, "rec", "frames") > 0, 30), sup.nodes["rec"].stats
        time.sleep(0.5)  # a heartbeat more: the count is final once the new process's first message was in
        counted = lost(sup, "rec", "frames")
    records = [r for r in read_records(rec) if r.get("port") == "frames"]
    seqs = [r["seq"] for r in records]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "a sequence number went back or was used twice"
    before, after = split(records, "frames")
    assert after[0]["index"] == 0  # the ticker itself starts over (it carries nothing): only its numbering goes on
    assert after[0]["seq"] > before[-1]["seq"] + 1
    # what it would have sent while down, at its rate: from its last message to its first again
    down_s = (after[0]["arrived_ns"] - before[-1]["arrived_ns"]) / 1e9
    assert 1 <= counted <= 3 * rate_hz * down_s + 20, (counted, down_s)


# -- file sources go on at the graph's clock ------------------------------------------------------

def test_a_restarted_file_source_goes_on_at_the_graph_clock_not_from_the_start(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load_graph(write_graph(tmp_path, {
        "camera": {"type": "camera", "params": {"source": str(DEMO_CLIP), "loop": True}},
        "microphone": {"type": "microphone", "params": {"source": str(DEMO_CLIP), "loop": True}},
        "taker": {"type": "taker", "params": {"path": str(rec)},
                  "inputs": {"frames": "camera/frames", "audio": "microphone/audio"}},
    }, settings={"restart_backoff_s": 0.2, "heartbeat_s": 0.2, "pace": "realtime"}), NODES)
    with Background(graph, timeout_s=180) as sup:
        assert wait_for(lambda: sum(r.get("port") == "frames" for r in read_records(rec)) > 50, 90)
        epoch_ns = sup.epoch_ns
        kill(sup, "camera", "microphone")
        n = len(read_records(rec))
        assert wait_for(lambda: len(read_records(rec)) > n + 200, 60), "output did not resume"
        assert wait_for(lambda: lost(sup, "taker", "frames") > 0 and lost(sup, "taker", "audio") > 0, 30)
    records = read_records(rec)
    for port, per_s in (("frames", 1.0), ("audio", 16000.0)):
        before, after = split(records, port)
        assert before and after, port
        first = after[0]
        media_s = first["at"] / per_s  # where in the (looping) clip it went on
        resumed_s = (first["arrived_ns"] - epoch_ns) / 1e9  # the graph's clock when it came
        assert media_s > before[-1]["at"] / per_s, f"{port}: went back"
        assert media_s > 1.0, f"{port}: started over at {media_s:.2f} s"
        assert abs(media_s - resumed_s) < 1.5, f"{port}: went on at {media_s:.2f} s, the clock said {resumed_s:.2f} s"
        # capture times stay on the timeline: epoch + media time
        assert abs(first["capture_ns"] - (epoch_ns + round(media_s * 1e9))) < 2e6, port
        seqs = [r["seq"] for r in before + after]
        assert all(b > a for a, b in zip(seqs, seqs[1:])), f"{port}: a sequence number went back"
    before, after = split(records, "frames")  # frame numbers go on (one caught in flight may be gone)
    assert after[0]["index"] > before[-1]["index"]
    assert all(b["index"] == a["index"] + 1 for a, b in zip(after, after[1:]))


def test_a_lossless_file_source_goes_on_right_after_its_last_frame(tmp_path: Path) -> None:
    """Lossless: no frame is sent twice or skipped by the restart; the few a kill catches in the
    dead process's send queue are gone, and the reader counts exactly those as lost."""
    rec = tmp_path / "rec.jsonl"
    graph = load_graph(write_graph(tmp_path, {
        "camera": {"type": "camera", "params": {"source": str(DEMO_CLIP)}},
        "microphone": {"type": "microphone", "params": {"source": str(DEMO_CLIP)}},
        "taker": {"type": "taker", "params": {"path": str(rec), "delay_s": 0.03},
                  "inputs": {"frames": "camera/frames", "audio": "microphone/audio"}},
    }, settings={"restart_backoff_s": 0.2, "heartbeat_s": 0.2, "pace": "lossless"}), NODES)
    bg = Background(graph, timeout_s=240)
    with bg as sup:
        assert wait_for(lambda: sum(r.get("port") == "frames" for r in read_records(rec)) > 40, 90)
        kill(sup, "camera")
        bg.thread.join(200)  # to the clip's end
        counted = lost(sup, "taker", "frames")
    pts = [round(r["at"] * 25) for r in read_records(rec) if r.get("port") == "frames"]  # frame numbers in the clip
    assert pts == sorted(set(pts)), "a frame was sent twice or out of order"
    assert pts[-1] == 224  # to the end of the clip
    missing = 225 - len(pts) - pts[0]
    assert missing == counted <= 8, (missing, counted)


# -- the renderer's files go on -----------------------------------------------------------------

SR, FPS = 16000, 25


def _tone(start: int, n: int, hz: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(start, start + n) / SR)).astype(np.float32)


WRITE_PART = """
import os, signal
from media.sinks import Mp4Sink, WavSink
from tests.test_restart_continues import write_part
write_part(Mp4Sink({mp4!r}, {fps}, {sr}, voice_tracks=1, run_id="run-1"), WavSink({wavs!r}, {sr}, run_id="run-1"),
           0.0, 3.0, value=60, hz=440.0)
os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 does: nothing closed, nothing flushed
"""


def write_part(mp4, wav, start_s: float, end_s: float, value: int, hz: float, newcomer: bool = False) -> None:
    """Frames of one grey ``value`` and a tone of ``hz`` (mixture and voice 3) over [start_s, end_s);
    ``newcomer``: a voice 9 (880 Hz) too, heard before voice 3 (it must not take voice 3's track)."""
    from media.sinks import DrawnFrame

    for i in range(round(start_s * FPS), round(end_s * FPS)):
        first, n = i * SR // FPS, SR // FPS
        mp4.video(DrawnFrame(np.full((96, 128, 3), value, np.uint8), i / FPS))
        tracks = {"voice_9": _tone(first, n, 880.0)} if newcomer else {}
        tracks.update({"mixture": _tone(first, n, hz), "voice_3": _tone(first, n, hz)})
        mp4.audio(tracks, first)
        wav.audio(tracks, first)
        wav.faces(i / FPS, [3], np.array([[10.0, 10.0, 50.0, 60.0]]), (128, 96))


def test_the_mp4_and_wavs_go_on_in_the_same_files_after_a_kill(tmp_path: Path) -> None:
    import av
    import soundfile as sf

    from media.sinks import Mp4Sink, WavSink

    mp4, wavs = tmp_path / "out" / "run.mp4", tmp_path / "out" / "voices"
    code = WRITE_PART.format(mp4=str(mp4), wavs=str(wavs), fps=FPS, sr=SR)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not mp4.exists()  # only its part, beside it

    # the restarted renderer: same run, from 5 s on (it was down 3 → 5 s), then the run ends
    sink, wav = Mp4Sink(mp4, FPS, SR, voice_tracks=1, run_id="run-1"), WavSink(wavs, SR, run_id="run-1")
    write_part(sink, wav, 5.0, 7.0, value=200, hz=660.0, newcomer=True)
    assert sink.close() == [mp4]
    wav.close()

    with av.open(str(mp4)) as container:  # one MP4, both parts on one timeline
        frames = [(f.time, f.to_ndarray(format="gray").mean()) for f in container.decode(video=0)]
    first_part = [t for t, grey in frames if grey < 130]
    second_part = [t for t, grey in frames if grey >= 130]
    assert first_part and first_part[0] == 0.0 and max(first_part) < 3.0
    assert max(first_part) > 1.0  # what the killed process wrote (less the last fragment and the encoder's queue)
    assert second_part[0] == pytest.approx(5.0) and second_part[-1] == pytest.approx(7.0 - 1 / FPS)
    assert len(second_part) == 50
    with av.open(str(mp4)) as container:
        mixture = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert mixture.size == pytest.approx(7 * SR, abs=1100)  # gapless: silence where the renderer was down

    def in_place(at_s: float, hz: float) -> float:
        start = round(at_s * SR)
        return float(np.corrcoef(mixture[start:start + 1600], _tone(start, 1600, hz))[0, 1])

    assert in_place(0.5, 440) > 0.98 and in_place(5.5, 660) > 0.98 and in_place(6.8, 660) > 0.98
    with av.open(str(mp4)) as container:  # voice 3 kept its track; voice 9, new, had none left
        voice_track = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=1)])
    start = round(5.5 * SR)
    assert np.corrcoef(voice_track[start:start + 1600], _tone(start, 1600, 660.0))[0, 1] > 0.98
    assert sink.stats()["voices_not_in_mp4"] == 50
    assert np.abs(mixture[round(3.5 * SR):round(4.5 * SR)]).max() < 0.01

    voice, sr = sf.read(str(wavs / "voice_3.wav"), dtype="float32")  # one WAV: both parts, silence between
    assert sr == SR and voice.size == 7 * SR
    assert np.allclose(voice[:SR], _tone(0, SR, 440), atol=1e-3)  # written before the kill, kept
    assert np.abs(voice[3 * SR:5 * SR]).max() == 0.0
    assert np.allclose(voice[5 * SR:], _tone(5 * SR, 2 * SR, 660), atol=1e-3)
    boxes = json.loads((wavs / "voices.json").read_text())["voices"]["3"]["boxes"]
    times = [row[0] for row in boxes]
    assert times[0] == 0.0 and 4.9 < times[75] and len(times) == 125  # the boxes of both processes
    assert sorted(p.name for p in wavs.glob("*.wav")) == ["voice_3.wav", "voice_9.wav"]
    assert not (wavs / ".voices.jsonl").exists() and not list(mp4.parent.glob(".run.mp4*"))


def test_a_new_run_starts_the_files_anew(tmp_path: Path) -> None:
    """Another run's id: the earlier run's leftovers (it never finished) are not joined in."""
    from media.sinks import Mp4Sink, WavSink

    mp4, wavs = tmp_path / "run.mp4", tmp_path / "voices"
    old = Mp4Sink(mp4, FPS, SR, voice_tracks=1, run_id="old")
    old_wav = WavSink(wavs, SR, run_id="old")
    write_part(old, old_wav, 0.0, 1.0, value=60, hz=440.0)  # never closed: as if killed
    old.writer.close()
    old_wav.journal.close()
    new, new_wav = Mp4Sink(mp4, FPS, SR, voice_tracks=1, run_id="new"), WavSink(wavs, SR, run_id="new")
    write_part(new, new_wav, 0.0, 0.4, value=200, hz=660.0)
    new.close()
    new_wav.close()
    import av
    import soundfile as sf

    with av.open(str(mp4)) as container:
        assert len(list(container.decode(video=0))) == 10
    assert sf.info(str(wavs / "voice_3.wav")).frames == round(0.4 * SR)


def test_the_renderer_places_a_restarted_senders_audio_by_its_capture_time() -> None:
    """A sender restarted without carrying its count (the STFT numbers its frames from 0 again, and
    the separator's voice samples with them) would put everything after it that far back in the
    files; a count more than a second off its capture time anchors the stream again."""
    from media.timeline import Timeline

    epoch = 10**12
    timeline = Timeline(SR, lambda: epoch)

    def at(seconds: float) -> int:  # the capture time of that second of the run
        return epoch + round(seconds * 1e9)

    assert timeline.place("voices", at(1.0), first_sample=SR) == SR
    assert timeline.place("voices", at(1.0101), first_sample=SR + 160) == SR + 160  # jitter: counted
    timeline.placed("voices", SR + 160, 160)
    # restarted at 30 s, counting from 0: placed at 30 s, not at 0
    assert timeline.place("voices", at(30.0), first_sample=0) == 30 * SR
    timeline.placed("voices", 0, 160)
    assert timeline.place("voices", at(30.01), first_sample=160) == 30 * SR + 160


def test_an_audio_gap_noted_in_a_part_does_not_hide_its_tracks(tmp_path: Path) -> None:
    """A restarted renderer reads which stream each track took from the earlier parts' notes; an audio
    gap's note names a track too (without a stream index) and once made it refuse every frame."""
    import json

    from media.sinks.mp4 import Parts, timing_of

    parts = Parts(tmp_path / "out.mp4", "run-1")
    parts.start()
    lines = [{"track": "mixture", "index": 1}, {"track": "voice_1", "index": 2},
             {"audio_gap": [1.0, 1.5], "track": "mixture"}]
    timing_of(parts.part(0)).write_text("".join(json.dumps(e) + "\n" for e in lines))
    parts.part(0).write_bytes(b"")
    assert parts.track_indices() == {"mixture": 1, "voice_1": 2}
