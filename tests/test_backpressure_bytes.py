"""Memory bounds in bytes (issue 15): an input's queue and an output's send pipe are bounded by a
byte budget, a full queue leaves the rest in ZeroMQ (lossless: the writer blocks), and audio that
an input does not deliver is counted, logged once per burst with its length, and marked in the MP4."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline import transport
from pipeline.graph import GraphError
from pipeline.harness import _wire
from pipeline.messages import AudioChunk, VideoFrame, encode
from pipeline.transport import (DECODED_OVERHEAD_BYTES, AudioGap, Publisher, Subscriber, default_max_bytes,
                                message_bytes)
from tests.graphs import Background, load, write_graph
from tests.runtime_nodes import read_records
from tests.test_runtime import wait_for

SR = 16000


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def chunk(i: int, n: int = 160, source: str = "mic") -> AudioChunk:
    """Audio chunk ``i`` of a 16 kHz stream of ``n``-sample chunks, numbered as a publisher would."""
    msg = AudioChunk(samples=np.full(n, (i % 100) / 100, np.float32), first_sample=i * n,
                     capture_ns=1_000_000_000 + i * n * 1_000_000_000 // SR)
    msg.seq, msg.source = i, source
    return msg


def cost(msg) -> int:
    """What one message costs in a queue: its frames, their bookkeeping and the decoded objects."""
    return message_bytes(_wire(msg)) + DECODED_OVERHEAD_BYTES


def frame(i: int, h: int = 128, w: int = 256) -> VideoFrame:
    return VideoFrame(image=np.full((h, w, 3), i % 256, np.uint8), frame_index=i, capture_ns=time.monotonic_ns())


# -- byte accounting in the queue ---------------------------------------------------------------

def test_defaults_come_from_the_message_type() -> None:
    assert default_max_bytes(VideoFrame) == 32 << 20
    assert default_max_bytes(AudioChunk) == 8 << 20
    sub = Subscriber(None, "", accepts=AudioChunk)
    assert sub.max_bytes == 8 << 20 and sub.carries_audio
    assert not Subscriber(None, "", accepts=VideoFrame).carries_audio


def test_a_queue_takes_messages_until_its_byte_budget_then_drops_the_oldest() -> None:
    """Fed directly (nobody reads it), a queue of 1000 messages but 5.5 chunks' bytes keeps the 6 newest."""
    c = cost(chunk(0, 2500))
    sub = Subscriber(None, "", size=1000, max_bytes=int(5.5 * c), accepts=AudioChunk, name="t.audio")
    for i in range(6):
        sub.accept(_wire(chunk(i, 2500)))
    assert len(sub.queue) == 6 and sub.stats.dropped == 0  # the 6th crossed the line: full now
    assert sub.full and sub.queued_bytes == pytest.approx(6 * c, rel=0.01)
    for i in range(6, 20):
        sub.accept(_wire(chunk(i, 2500)))
    assert [int(m.first_sample) // 2500 for m in sub.queue] == list(range(14, 20))
    assert sub.stats.dropped == 14 and sub.stats.gap_samples == 14 * 2500
    # what it dropped is one hole in the stream, from chunk 0 on
    gaps = [(g.first_sample, g.samples, g.messages, g.reason) for g in sub.take_gaps()]
    assert gaps == [(0, 14 * 2500, 14, "dropped")]
    while sub.pop() is not None:
        pass
    assert sub.queued_bytes == 0


def test_a_single_message_larger_than_the_budget_still_goes_through() -> None:
    sub = Subscriber(None, "", size=10, max_bytes=4096, accepts=AudioChunk)
    assert sub.accept(_wire(chunk(0, 4000)))  # 16 kB of samples
    assert len(sub.queue) == 1 and sub.stats.dropped == 0


def test_a_full_queue_leaves_the_rest_in_zeromq_and_loses_nothing(ctx, tmp_path) -> None:
    """Realtime: a queue at its byte budget stops reading; the backlog waits in ZeroMQ and comes
    through as the reader takes, none dropped (before, a drain read it all and dropped the oldest)."""
    pub = Publisher(ctx, f"ipc://{tmp_path}/p", kind=AudioChunk)
    c = cost(chunk(0, 2500))
    sub = Subscriber(ctx, pub.endpoint, name="t.audio", size=1000, max_bytes=int(5.5 * c), accepts=AudioChunk)
    assert pub.wait_for_subscribers(1, 5)
    for i in range(60):
        pub.send(chunk(i, 2500), source="mic")
    got = []
    assert wait_for(lambda: sub.drain() is not None and len(sub.queue) == 6, 5), len(sub.queue)
    assert sub.full and sub.stats.dropped == 0  # full: the other 54 wait in ZeroMQ
    while True:  # take what the queue holds, then read again
        while (msg := sub.pop()) is not None:
            got.append(msg.first_sample // 2500)
        if len(got) >= 60:
            break
        assert wait_for(lambda: sub.drain() is not None and sub.queue, 5), (got, sub.stats)
        assert len(sub.queue) <= 6 and sub.queued_bytes <= 6.5 * c
    assert got == list(range(60))
    assert (sub.stats.dropped, sub.stats.lost, sub.stats.gap_samples) == (0, 0, 0)
    sub.close()
    pub.close(0)


# -- the writer's side ---------------------------------------------------------------------------

def test_the_send_pipe_is_sized_from_the_byte_budget_and_a_stalled_reader_costs_at_most_that(ctx, tmp_path) -> None:
    """Realtime: a reader that stops reading holds the writer to its budget; what did not fit is
    dropped inside ZeroMQ and counted by the reader as lost."""
    size = message_bytes(encode(frame(0)))
    pub = Publisher(ctx, f"ipc://{tmp_path}/p", kind=VideoFrame, max_bytes=10 * size + 100)
    sub = Subscriber(ctx, pub.endpoint, name="t.video", size=1000, max_bytes=4 * size, accepts=VideoFrame)
    assert pub.wait_for_subscribers(1, 5)
    pub.send(frame(0))  # sizes both pipes for these 100 kB frames
    assert wait_for(lambda: sub.drain() and sub.pop() is not None, 5)
    assert pub.hwm == 10 and sub.rcvhwm == 2
    assert pub.socket.getsockopt(zmq.SNDHWM) == 10 and sub.socket.getsockopt(zmq.RCVHWM) == 2
    for i in range(1, 101):  # the reader is not reading
        pub.send(frame(i))
    time.sleep(0.3)
    received: list[int] = []

    def take() -> bool:
        sub.drain()
        while (msg := sub.pop()) is not None:
            received.append(msg.frame_index)
        return bool(received) and received[-1] == 101

    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # read what the pipes held
        take()
        time.sleep(0.01)
    pub.send(frame(101))  # now that there is room: it shows the gap before it
    assert wait_for(take, 5), received
    held = len(received) - 1  # what the pipes held of the 100 sent while it did not read
    # at most: send pipe 10 + receive pipe 2 + what the kernel's socket buffer takes (~200 kB: 2 of these)
    assert 5 <= held <= 10 + 2 + 4, received
    assert sub.stats.lost == 100 - held and sub.stats.dropped == 0
    sub.close()
    pub.close(0)


def test_lossless_writer_blocks_when_the_readers_byte_budget_is_full(ctx, tmp_path) -> None:
    """Lossless: the reader reads only up to its byte budget, and the writer waits for it."""
    size = message_bytes(encode(frame(0)))
    pub = Publisher(ctx, f"ipc://{tmp_path}/p", lossless=True, kind=VideoFrame)
    sub = Subscriber(ctx, pub.endpoint, name="t.video", size=1000, max_bytes=3 * size, lossless=True,
                     accepts=VideoFrame)
    assert pub.wait_for_subscribers(1, 5)
    writer = threading.Thread(target=lambda: [pub.send(frame(i)) for i in range(40)])
    writer.start()
    time.sleep(0.5)
    sub.drain()
    time.sleep(0.3)
    sub.drain()
    # queue at its budget (3 frames, the third crossing it), the pipes at their few messages: the writer waits
    assert len(sub.queue) == 3, len(sub.queue)
    assert pub.sent < 40 and writer.is_alive()
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 40 and time.monotonic() < deadline:
        sub.drain()
        assert sub.queued_bytes <= 3 * (size + DECODED_OVERHEAD_BYTES) + 100  # (headers differ by a few bytes)
        while (msg := sub.pop()) is not None:
            got.append(msg.frame_index)
        time.sleep(0.002)
    writer.join(5)
    assert got == list(range(40))
    assert (sub.stats.dropped, sub.stats.lost) == (0, 0)
    assert pub.blocked_s > 0.3
    sub.close()
    pub.close(0)


# -- audio gaps: counted, logged once per burst, handed to the node ---------------------------------

def test_an_audio_gap_burst_is_logged_once_with_its_duration(monkeypatch, caplog) -> None:
    monkeypatch.setattr(transport, "GAP_QUIET_S", 0.2)
    caplog.set_level(logging.WARNING, logger="pipeline.transport")
    sub = Subscriber(None, "", size=4, accepts=AudioChunk, upstream="mic", name="renderer.audio")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "audio gap" in r.getMessage()]

    # burst 1: five chunks lost on the way (a sequence gap): 5 × 160 samples = 50 ms
    for i in [0, 1, 2, 3, 9, 10]:
        sub.accept(_wire(chunk(i)))
        sub.pop()
    assert sub.stats.lost == 5
    sub.log_gaps()
    assert lines() == []  # not over yet
    time.sleep(0.25)
    sub.log_gaps()
    assert len(lines()) == 1, lines()
    assert "input renderer.audio: audio gap of 50 ms (800 samples at 16000 Hz)" in lines()[0]
    assert "0 message(s) dropped by the queue, 5 lost" in lines()[0]
    assert [(g.first_sample, g.samples, g.reason) for g in sub.take_gaps()] == [(4 * 160, 800, "lost")]

    # burst 2: nobody reads a queue of 4: 6 of 10 chunks dropped, and two more lost in between
    for i in [11, 12, 13, 14, 15, 16, 19, 20, 21, 22]:
        sub.accept(_wire(chunk(i)))
    sub.log_gaps()
    assert len(lines()) == 1
    time.sleep(0.25)
    sub.log_gaps()
    sub.log_gaps()
    assert len(lines()) == 2, lines()
    assert "audio gap of 80 ms (1280 samples at 16000 Hz)" in lines()[1]
    assert "6 message(s) dropped by the queue, 2 lost" in lines()[1]
    gaps = sub.take_gaps()
    assert sum(g.samples for g in gaps) == 1280
    assert (gaps[0].first_sample, gaps[0].reason) == (11 * 160, "dropped")
    assert sub.stats.gap_samples == 800 + 1280 and sub.stats.gap_bursts == 2
    assert sub.stats.dropped == 6 and sub.stats.lost == 7


def test_a_video_input_logs_no_audio_gap(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.transport")
    sub = Subscriber(None, "", policy="latest", accepts=VideoFrame, name="renderer.video")
    for i in range(5):
        msg = frame(i, 8, 8)
        msg.seq, msg.source = i * 2, "camera"
        sub.accept(_wire(msg))
    sub.close()
    assert sub.stats.dropped == 4 and sub.stats.lost == 4
    assert sub.gaps == [] and not [r for r in caplog.records if "audio gap" in r.getMessage()]


def test_a_stopped_reader_catches_up_without_losing_audio(tmp_path) -> None:
    """The whole runtime, realtime: a reader with a queue of 4 chunks is SIGSTOPped while 1000 chunks
    are sent; after SIGCONT it takes every one of them (they waited in ZeroMQ, within its budgets)."""
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "audio_ticker", "params": {"count": 1000, "rate_hz": 1000}},
        "rec": {"type": "recorder", "params": {"path": str(rec)},
                "inputs": {"audio": {"from": "src/audio", "size": 4}}},
    }))
    with Background(graph, timeout_s=120) as sup:
        assert wait_for(lambda: len(read_records(rec)) > 10, 60), "no audio flowed"
        pid = sup.nodes["rec"].proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            taken = len(read_records(rec))
            time.sleep(1.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 60), sup.nodes["rec"]
        stats = sup.nodes["rec"].stats["inputs"]["audio"]
    indices = [r["index"] for r in read_records(rec) if r.get("port") == "audio"]
    assert taken < 800, "the source was nearly done before the stall: nothing to test"
    assert indices == list(range(1000))
    assert (stats["dropped"], stats["lost"], stats["gap_samples"]) == (0, 0, 0)


# -- the graph: max_bytes per input and per output -------------------------------------------------

def test_the_graph_sets_byte_budgets_per_input_and_output(tmp_path) -> None:
    from pipeline.runner import Runtime

    graph = load(write_graph(tmp_path, {
        "src": {"type": "audio_ticker", "outputs": {"audio": {"max_bytes": "2MiB"}}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "r.jsonl")},
                "inputs": {"audio": {"from": "src/audio", "size": 64, "max_bytes": 65536}}},
    }))
    assert graph.nodes["src"].output_bytes == {"audio": 2 << 20}
    assert graph.nodes["rec"].inputs["audio"].max_bytes == 65536
    graph.resolve_endpoints(tmp_path)
    src = Runtime(graph, graph.nodes["src"], tmp_path)
    rec = Runtime(graph, graph.nodes["rec"], tmp_path)
    try:
        assert src.publishers["audio"].max_bytes == 2 << 20
        assert rec.subscribers["audio"].max_bytes == 65536
        assert rec.stats()["inputs"]["audio"]["max_bytes"] == 65536
    finally:
        rec._close_sockets()
        src._close_sockets()


@pytest.mark.parametrize("conf, why", [
    ({"from": "src/audio", "max_bytes": 100}, "max_bytes must be bytes in"),
    ({"from": "src/audio", "max_bytes": "lots"}, "max_bytes must be bytes in"),
    ({"from": "src/audio", "max_bytes": True}, "max_bytes must be bytes in"),
])
def test_a_bad_byte_budget_is_refused_before_anything_runs(tmp_path, conf, why) -> None:
    with pytest.raises(GraphError, match=why):
        load(write_graph(tmp_path, {"src": {"type": "audio_ticker"},
                                    "rec": {"type": "recorder", "inputs": {"audio": conf}}}))
    with pytest.raises(GraphError, match=why):
        load(write_graph(tmp_path, {
            "src": {"type": "audio_ticker", "outputs": {"audio": {"max_bytes": conf["max_bytes"]}}},
            "rec": {"type": "recorder", "inputs": {"audio": "src/audio"}}}))


# -- the renderer marks a gap in its MP4 ----------------------------------------------------------

def test_the_renderer_marks_an_audio_gap_in_its_mp4(tmp_path: Path) -> None:
    """0.8–1.2 s of the mixture never came: the MP4 has silence there, the frames from the moment the
    gap was known (the first audio after it) for a second carry the red mark, and its comment lists it."""
    import av

    from nodes.renderer import Renderer
    from pipeline.harness import Harness

    fps, w, h = 25, 160, 120
    mp4 = tmp_path / "gap.mp4"
    with Harness(Renderer, {"mp4_path": str(mp4), "fps": float(fps), "record_path": "none"}) as hs:
        n = SR // 100
        f = 0
        for k in range(200):  # 2 s of 10 ms chunks, frames between them in capture order
            start = k * n
            capture = hs.epoch_ns + start * 1_000_000_000 // SR
            if not 80 <= k < 120:
                if k == 120:  # the chunk after the hole: the transport would report the gap now
                    gap = AudioGap(80 * n, 40 * n, SR, hs.epoch_ns + 80 * n * 1_000_000_000 // SR, 40, "lost")
                    hs.node.on_audio_gap("audio", gap)
                tone = (0.3 * np.sin(2 * np.pi * 440 * (start + np.arange(n)) / SR)).astype(np.float32)
                hs.feed("audio", AudioChunk(samples=tone, first_sample=start, capture_ns=capture))
            while f < 2 * fps and f * SR // fps <= start:
                hs.feed("video", VideoFrame(image=np.full((h, w, 3), 90, np.uint8), frame_index=f,
                                            capture_ns=hs.epoch_ns + f * 1_000_000_000 // fps))
                f += 1
        hs.end()
        counters = hs.node.counters
    assert counters["mp4.audio_gaps"] == 1 and counters["mp4.audio_gap_s"] == pytest.approx(0.4)
    with av.open(str(mp4)) as c:
        assert "mixture 0.80-1.20 s" in c.metadata.get("comment", ""), c.metadata
        frames = [(fr.time, fr.to_ndarray(format="bgr24")) for fr in c.decode(video=0)]
    with av.open(str(mp4)) as c:
        audio = np.concatenate([fr.to_ndarray().reshape(-1) for fr in c.decode(audio=0)])

    def red(img: np.ndarray) -> bool:  # the border: red where the frame is grey
        b, g, r = img[h // 2, 1].astype(int)
        return r > 150 and g < 100 and b < 100

    marked = [round(t, 2) for t, img in frames if red(img)]
    assert marked and min(marked) >= 1.2 - 1e-6 and max(marked) <= 2.2, marked  # from when it was known
    assert not [t for t, img in frames if t < 0.8 and red(img)]
    assert counters["mp4.frames_marked_audio_gap"] == len(marked)
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * SR):int(b * SR)] ** 2)))  # noqa: E731
    assert rms(0.9, 1.1) < 0.01 < rms(0.3, 0.7), (rms(0.9, 1.1), rms(0.3, 0.7))


def test_messages_that_grow_under_traffic_keep_flowing(ctx, tmp_path, caplog) -> None:
    """The marks are never moved on a live pipe. libzmq 4.3 acknowledges reads to the writer only every
    half-mark's worth, so a mark lowered below what is unacknowledged stalls the pipe for good: after a
    microphone restart the stft's silence-filled spectra (47× bigger) once stopped every reader of it
    until the stft itself restarted. Here: 2,000 small chunks read, then chunks 40× bigger."""
    pub = Publisher(ctx, f"ipc://{tmp_path}/grow", kind=AudioChunk)
    sub = Subscriber(ctx, pub.endpoint, name="t.audio", size=100_000, max_bytes=64 << 20, accepts=AudioChunk)
    assert pub.wait_for_subscribers(1, 5)
    got: list[int] = []

    def take(until: int) -> bool:
        sub.drain()
        while (msg := sub.pop()) is not None:
            got.append(msg.first_sample)
        return len(got) >= until

    for i in range(2000):
        pub.send(chunk(i, 160))
        if i % 100 == 99:
            assert wait_for(lambda: take(i + 1), 5), len(got)
    hwm, rcvhwm = pub.socket.getsockopt(zmq.SNDHWM), sub.socket.getsockopt(zmq.RCVHWM)  # set at the first message
    for i in range(2000, 2200):
        pub.send(chunk(i, 6400))  # 400 ms each: 40× the size the marks were set for
        assert wait_for(lambda: take(i + 1), 5), f"stalled after {len(got)} messages"
    assert got == [160 * i for i in range(2000)] + [6400 * i for i in range(2000, 2200)]
    assert (pub.socket.getsockopt(zmq.SNDHWM), sub.socket.getsockopt(zmq.RCVHWM)) == (hwm, rcvhwm)
    assert sub.stats.lost == sub.stats.dropped == 0
    assert any("the mark is not moved on a live pipe" in r.getMessage() for r in caplog.records)
    sub.close()
    pub.close(0)
