"""The runtime for real: separate processes, real sockets, the real supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.messages import VideoFrame
from pipeline.transport import Publisher, Subscriber
from tests.graphs import Background, load, write_graph
from tests.runtime_nodes import read_records

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout_s: float = 20.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): it has exited but not been reaped
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# -- transport, in one process ------------------------------------------------------------

@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _pair(ctx, tmp_path, **kw) -> tuple[Publisher, Subscriber]:
    pub = Publisher(ctx, f"ipc://{tmp_path}/p")
    sub = Subscriber(ctx, pub.endpoint, name="test", **kw)
    assert pub.wait_for_subscribers(1, 5), "subscription never arrived"
    return pub, sub


def _frame(i: int) -> VideoFrame:
    return VideoFrame(image=np.full((2, 2, 3), i, np.uint8), frame_index=i, capture_ns=time.monotonic_ns())


def _drain_until(sub: Subscriber, received: int) -> None:
    assert wait_for(lambda: sub.drain() is not None and sub.stats.received >= received, 5), sub.stats


def test_queue_policy_drops_oldest_and_counts(ctx, tmp_path) -> None:
    pub, sub = _pair(ctx, tmp_path, policy="queue", size=4)
    for i in range(10):
        pub.send(_frame(i))
    _drain_until(sub, 10)
    got = [sub.pop().frame_index for _ in range(len(sub.queue))]
    assert got == [6, 7, 8, 9]
    assert (sub.stats.dropped, sub.stats.delivered, sub.stats.lost) == (6, 4, 0)


def test_latest_policy_keeps_only_the_newest(ctx, tmp_path) -> None:
    pub, sub = _pair(ctx, tmp_path, policy="latest")
    for i in range(5):
        pub.send(_frame(i))
    _drain_until(sub, 5)
    assert [m.frame_index for m in sub.queue] == [4]
    assert sub.stats.dropped == 4


def test_sequence_gaps_are_counted_as_lost(ctx, tmp_path) -> None:
    pub, sub = _pair(ctx, tmp_path, policy="queue", size=100)
    for i in range(6):
        if i in (2, 3):
            pub._seq += 1  # as if ZeroMQ had dropped them at the high-water mark
            continue
        pub.send(_frame(i))
    _drain_until(sub, 4)
    assert sub.stats.lost == 2


def test_malformed_frames_are_counted_not_fatal(ctx, tmp_path) -> None:
    pub, sub = _pair(ctx, tmp_path, policy="queue", size=100)
    pub.socket.send_multipart([b"VideoFrame", b"{oops", b"123"])
    pub.socket.send_multipart([b"x"])
    pub.send(_frame(1))
    _drain_until(sub, 1)
    assert sub.stats.bad == 2
    assert "not valid JSON" in sub.last_error or "frame" in sub.last_error
    assert sub.pop().frame_index == 1


# -- whole graphs, many processes ---------------------------------------------------------

def test_latest_policy_never_delivers_stale_frames_to_a_slow_consumer(tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 200, "count": 400}},
        "rec": {"type": "recorder", "params": {"path": str(rec), "delay_s": 0.05}, "inputs": {"frames": "src/frames"}},
    }))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 30), sup.nodes["rec"]
    frames = [r for r in read_records(rec) if r.get("port") == "frames"]
    assert 10 <= len(frames) < 200, len(frames)  # it could not keep up, so it skipped
    ages = sorted(r["age_ms"] for r in frames)
    # At 200 Hz a queue would age by 45 ms per frame handled; `latest` stays within ~1 period.
    assert ages[len(ages) // 2] < 15, ages
    assert ages[-2] < 60, ages
    indices = [r["index"] for r in frames]
    assert indices == sorted(indices)
    stats = sup.nodes["rec"].stats["inputs"]["frames"]
    assert stats["dropped"] + stats["lost"] >= 400 - len(frames) - 5


def test_bad_input_is_counted_and_the_node_keeps_running(tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "garbler", "params": {"count": 40}},
        "rec": {"type": "recorder", "params": {"path": str(rec), "reject_odd": False},
                "inputs": {"frames": {"from": "src/frames", "policy": "queue", "size": 100}}},
    }))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 30)
    records = read_records(rec)
    assert [r["index"] for r in records if r.get("port") == "frames"] == list(range(0, 40, 2))
    assert records[-1] == {"event": "end"}
    assert sup.nodes["rec"].stats["inputs"]["frames"]["bad"] == 20
    assert sup.nodes["rec"].restarts == 0


def test_bad_input_raised_by_a_node_is_counted(tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "audio_ticker", "params": {"count": 30, "rate_hz": 500}},
        "rec": {"type": "recorder", "params": {"path": str(rec), "reject_odd": True},
                "inputs": {"audio": {"from": "src/audio", "size": 100}}},
    }))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 30)
    assert [r["index"] for r in read_records(rec) if r.get("port") == "audio"] == list(range(0, 30, 2))
    assert sup.nodes["rec"].stats["counters"]["errors"] == 15


def test_sigkilled_node_is_restarted_and_output_keeps_flowing(tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 100}},
        "relay": {"type": "relay", "inputs": {"frames": "src/frames"}},
        "rec": {"type": "recorder", "params": {"path": str(rec)}, "inputs": {"frames": "relay/frames"}},
    }, settings={"restart_backoff_s": 0.2}))
    bg = Background(graph)
    with bg as sup:
        assert wait_for(lambda: len(read_records(rec)) > 20, 30), "no frames flowed"
        victim = sup.nodes["relay"].proc.pid
        os.kill(victim, signal.SIGKILL)
        killed_at = len(read_records(rec))
        assert wait_for(lambda: sup.nodes["relay"].restarts == 1 and sup.nodes["relay"].state == "running", 30)
        assert wait_for(lambda: len(read_records(rec)) > killed_at + 50, 30), "output did not resume"
        assert sup.nodes["relay"].proc.pid != victim
        pids = [n.proc.pid for n in sup.nodes.values()]
        run_dir = sup.run_dir
    assert any("'relay' exited with signal SIGKILL; restart 1/5" in e for e in bg.events), bg.events
    assert not [p for p in pids if alive(p)], "orphan node processes"
    assert not run_dir.exists(), "run dir (ipc files) left behind"


def test_a_node_that_keeps_crashing_fails_the_graph_with_a_reason(tmp_path) -> None:
    graph = load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 100}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "missing-dir" / "rec.jsonl")},
                "inputs": {"frames": "src/frames"}},
    }, settings={"max_restarts": 2, "restart_backoff_s": 0.1}))
    bg = Background(graph)
    with bg as sup:
        bg.thread.join(60)
    assert bg.code == 1
    assert "rec" in sup.failure and "restarted 2 times" in sup.failure


def _launch(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_ctrl_c_stops_everything_cleanly(tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    path = write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 50}},
        "rec": {"type": "recorder", "params": {"path": str(rec)}, "inputs": {"frames": "src/frames"}},
    })
    env = {**os.environ, "EARSHOT_NODE_PLUGINS": "tests.runtime_nodes:REGISTRY"}
    proc = _launch("run", str(path), env=env)
    assert wait_for(lambda: len(read_records(rec)) > 10, 30), proc.stdout.read() if proc.poll() is not None else ""
    node_pid = read_records(rec)[0]["pid"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert wait_for(lambda: not alive(node_pid), 5), "node outlived the launcher"
    run_dirs = [line.split("run dir ")[1].rstrip(")") for line in out.splitlines() if "run dir" in line]
    assert run_dirs and not Path(run_dirs[0]).exists(), out


def test_check_reports_a_bad_graph_and_exits_non_zero(tmp_path) -> None:
    path = write_graph(tmp_path, {"rec": {"type": "recorder", "inputs": {"frames": "nowhere/frames"}}})
    env = {**os.environ, "EARSHOT_NODE_PLUGINS": "tests.runtime_nodes:REGISTRY"}
    proc = _launch("check", str(path), env=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{path}: node 'rec' inputs.frames: unknown source node 'nowhere'" in out


def test_top_shows_a_live_table_of_every_node(tmp_path) -> None:
    graph = load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 50}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "src/frames"}},
    }))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "running", 30)
        proc = _launch("top", "--once", "--run-dir", str(sup.run_dir))
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"src", "rec"}, out
    assert rows["rec"][1] == "running" and int(rows["rec"][2]) > 0  # frames in
    assert int(rows["src"][3]) > 0  # frames out


# -- lossless pace: back-pressure instead of drops --------------------------------------------

def test_lossless_transport_blocks_the_writer_instead_of_dropping(ctx, tmp_path) -> None:
    """A reader that takes one frame per 5 ms gets all 60 in order; the writer waited for it."""
    import threading

    pub = Publisher(ctx, f"ipc://{tmp_path}/p", lossless=True)
    sub = Subscriber(ctx, pub.endpoint, name="test", policy="latest", lossless=True)
    assert pub.wait_for_subscribers(1, 5)
    # 230 kB frames: more than the kernel's socket buffer holds, so the writer must feel the reader
    big = [VideoFrame(image=np.full((240, 320, 3), i, np.uint8), frame_index=i) for i in range(60)]
    writer = threading.Thread(target=lambda: [pub.send(frame) for frame in big])
    writer.start()
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 60 and time.monotonic() < deadline:
        sub.drain()
        assert len(sub.queue) <= 2  # `latest` is a short queue in lossless mode: memory stays bounded
        msg = sub.pop()
        if msg is not None:
            got.append(msg.frame_index)
        time.sleep(0.005)
    writer.join(5)
    assert got == list(range(60))
    assert (sub.stats.dropped, sub.stats.lost) == (0, 0)
    assert pub.blocked_s > 0.05, "the writer never had to wait: there was no back-pressure to test"


def test_media_clock_keeps_sources_within_the_slack(tmp_path) -> None:
    from pipeline import media_clock

    path = tmp_path / "clock"
    media_clock.create(path, ["camera", "microphone"])
    camera = media_clock.MediaClock(path, ["camera", "microphone"], "camera", slack_ns=200_000_000)
    mic = media_clock.MediaClock(path, ["camera", "microphone"], "microphone", slack_ns=200_000_000)
    assert mic.may_release(150_000_000)          # the camera is at 0: 150 ms ahead is within the slack
    assert not mic.may_release(300_000_000)      # 300 ms ahead is not
    assert camera.may_release(100_000_000)
    assert mic.may_release(300_000_000)          # the camera reached 100 ms
    camera.leave()                               # finished: nobody waits for it
    assert mic.may_release(10_000_000_000)
    assert not mic.wait(10**12, still_running=lambda: False) or True


def test_lossless_pace_delivers_every_frame_to_a_slow_consumer(tmp_path) -> None:
    """The same fast source and slow reader as the `latest` test above: in lossless mode nothing is skipped."""
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 200, "count": 120, "height": 240, "width": 320}},
        "rec": {"type": "recorder", "params": {"path": str(rec), "delay_s": 0.01}, "inputs": {"frames": "src/frames"}},
    }, settings={"pace": "lossless"}))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 60), sup.nodes["rec"]
        stats = sup.nodes["rec"].stats["inputs"]["frames"]
        blocked = sup.nodes["src"].stats["outputs"]["frames"]["blocked_s"]
    frames = [r["index"] for r in read_records(rec) if r.get("port") == "frames"]
    assert frames == list(range(120))
    assert (stats["dropped"], stats["lost"]) == (0, 0)
    assert blocked > 0.1, "the source never waited for its slow reader"


def test_lossless_inputs_are_paired_by_capture_time(tmp_path) -> None:
    """An input that `waits_for` another is held until that one has caught up with its time."""
    out = tmp_path / "pairs.jsonl"
    graph = load(write_graph(tmp_path, {
        "fast": {"type": "ticker", "params": {"rate_hz": 200, "count": 100}},
        "slow": {"type": "ticker", "params": {"rate_hz": 25, "count": 40}},
        "pair": {"type": "pairer", "params": {"path": str(out)}, "inputs": {"fast": "fast/frames", "slow": "slow/frames"}},
    }, settings={"pace": "lossless"}))
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["pair"].state == "finished", 60), sup.nodes["pair"]
        timeouts = sup.nodes["pair"].stats["counters"].get("sync_timeouts", 0)
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["index"] for p in pairs] == list(range(100))
    # every fast frame met a slow frame at least as new (until the slow source ended)
    paired = [p for p in pairs if p["slow_ns"] >= p["capture_ns"]]
    assert len(paired) >= 90 and timeouts == 0, (len(paired), timeouts)


# -- hostile input: one frame must never crash a node (issue 15) ----------------------------------

def test_an_input_takes_only_its_declared_type_and_only_from_its_upstream(ctx, tmp_path) -> None:
    from pipeline.messages import AudioChunk, EndOfStream, encode

    pub = Publisher(ctx, f"ipc://{tmp_path}/p")
    sub = Subscriber(ctx, pub.endpoint, name="test", policy="queue", size=100, accepts=VideoFrame, upstream="src")
    assert pub.wait_for_subscribers(1, 5)
    pub.send(AudioChunk(samples=np.zeros(4, np.float32)), source="src")  # well-formed, wrong type
    pub.socket.send_multipart(encode(EndOfStream(source="intruder")))  # an end from anyone else
    pub.socket.send_multipart(encode(VideoFrame(image=np.zeros((2, 2, 3), np.uint8), frame_index=7,
                                                source="intruder")))
    pub.send(_frame(1), source="src")
    assert wait_for(lambda: sub.drain() is not None and sub.stats.received >= 1 and sub.stats.bad >= 3, 5), sub.stats
    assert not sub.ended and [m.frame_index for m in sub.queue] == [1]
    assert sub.stats.reasons == {"wrong type: AudioChunk": 1, "foreign sender": 2}
    assert sub.stats.lost == 0  # the refused AudioChunk still counted in the sender's sequence
    pub.send(EndOfStream(), source="src")
    assert wait_for(lambda: sub.drain() is not None and sub.ended, 5)


def test_deliver_counts_any_failure_logs_a_bug_once_with_its_traceback_and_lets_base_exceptions_through(caplog):
    from pipeline.harness import Harness
    from pipeline.node import BadInput, Input, Node
    from pipeline.runner import deliver

    class Fragile(Node):
        inputs = {"frames": Input(VideoFrame)}

        def on_message(self, port, msg):
            if msg.frame_index == 1:
                raise BadInput("frame 1 is no good")
            if msg.frame_index == 2:
                return msg.no_such_field  # a bug: AttributeError
            if msg.frame_index == 3:
                raise KeyboardInterrupt

    h = Harness(Fragile)
    sub = Subscriber(None, "", name="fragile.frames", accepts=VideoFrame)
    with caplog.at_level("WARNING", logger="pipeline.transport"):
        results = [deliver(h.node, "frames", _frame(i), sub) for i in (0, 1, 2, 2, 2)]
    assert results == [True, False, False, False, False]
    assert sub.stats.errors == 4 and sub.stats.reasons == {"BadInput": 1, "AttributeError": 3}
    assert h.node.counters["errors"] == 4
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "AttributeError" in tracebacks[0].getMessage()
    assert len(caplog.records) == 2  # the BadInput (first of its burst) and the bug; the rest only counted
    with pytest.raises(KeyboardInterrupt):
        deliver(h.node, "frames", _frame(3), sub)


from tests.runtime_nodes import Ticker  # noqa: E402  (the base of the forging source below)


class Forger(Ticker):
    """A source that also forges: between good frames, the frames that used to crash a reader."""

    def step(self) -> bool:
        if self.params.count and self.index >= self.params.count:
            return False
        from pipeline.messages import AudioChunk, EndOfStream, encode

        socket, pub = self._runtime.publishers["frames"].socket, self._runtime.publishers["frames"]
        good = [b.tobytes() if hasattr(b, "tobytes") else b for b in encode(VideoFrame(
            image=np.zeros((4, 4, 3), np.uint8), frame_index=self.index, source=self.name))]
        hostile = [
            lambda: socket.send_multipart([good[0], b"[" * 30000 + b"]" * 30000, good[2]]),  # RecursionError once
            lambda: socket.send_multipart([good[0], good[1].replace(b'"seq":0', b'"seq":' + b"9" * 5000), good[2]]),
            lambda: socket.send_multipart([good[0], good[1].replace(b'"shape":[4,4,3]', b'"shape":[0,2199023255552,3]'),
                                           b""]),
            lambda: socket.send_multipart([good[0], good[1].replace(b'"shape":[4,4,3]', b'"shape":[0,0,3]'), b""]),
            lambda: pub.send(AudioChunk(samples=np.full(8, np.nan, np.float32)), source=self.name),
            lambda: pub.send(AudioChunk(samples=np.zeros(8, np.float32), first_sample=10**11), source=self.name),
            lambda: socket.send_multipart(encode(EndOfStream(source="intruder", reason="forged"))),
        ]
        if self.index % 2:
            hostile[self.index // 2 % len(hostile)]()
        else:
            self.send("frames", VideoFrame(image=np.zeros((4, 4, 3), np.uint8), frame_index=self.index,
                                           capture_ns=time.monotonic_ns()))
        self.index += 1
        time.sleep(0.005)
        return True


def test_hostile_frames_are_refused_counted_by_reason_and_the_node_runs_on(tmp_path) -> None:
    from pipeline.graph import load_graph
    from tests.runtime_nodes import REGISTRY

    rec = tmp_path / "rec.jsonl"
    path = write_graph(tmp_path, {
        "src": {"type": "forger", "params": {"count": 42}},
        "rec": {"type": "recorder", "params": {"path": str(rec)},
                "inputs": {"frames": {"from": "src/frames", "policy": "queue", "size": 100}}},
    })
    graph = load_graph(path, {**REGISTRY, "forger": "tests.test_runtime:Forger"})
    with Background(graph) as sup:
        assert wait_for(lambda: sup.nodes["rec"].state == "finished", 30), sup.nodes["rec"]
        summary = sup.summary()
    records = read_records(rec)
    assert [r["index"] for r in records if r.get("port") == "frames"] == list(range(0, 42, 2))
    assert records[-1] == {"event": "end"}  # the forged end-of-stream did not end it; the real one did
    stats = sup.nodes["rec"].stats["inputs"]["frames"]
    assert sup.nodes["rec"].restarts == 0 and stats["bad"] == 21
    # the NaN chunks were numbered by the sender but refused before their number could be read:
    # a gap in the sequence, so also `lost` (the forged frames went around the numbering)
    assert stats["lost"] == 3
    assert stats["reasons"] == {"malformed: limits": 9, "malformed: schema": 3, "non-finite": 3,
                                "wrong type: AudioChunk": 3, "foreign sender": 3}, stats["reasons"]
    line = next(s for s in summary if s.startswith("rec:"))
    assert "refused frames (9 malformed: limits" in line and "frames: 21 bad" in line, line
