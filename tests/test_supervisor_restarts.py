"""The supervisor's verdicts: a restart budget per time window, a ConfigError that is not retried,
and a run that ends (or reaches --duration) after a node fell is not a success."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.graph import load_graph
from pipeline.messages import VideoFrame
from pipeline.node import Node, Output
from pipeline.supervisor import CONFIG_ERROR, FAILED, FINISHED, ConfigError, Supervisor
from tests.graphs import Background, write_graph
from tests.runtime_nodes import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "demo" / "demo.mp4"


class Crasher(Node):
    """Sends frames for ``life_s``, then exits with code 1 (``crash: false``: ends cleanly;
    ``once``: a marker file, crash only if it does not exist yet, and make it)."""

    @dataclass
    class Params:
        life_s: float = 0.5
        crash: bool = True
        once: str = ""

    outputs = {"frames": Output(VideoFrame)}

    def open(self) -> None:
        self.until = time.monotonic() + self.params.life_s

    def step(self) -> bool:
        if time.monotonic() > self.until:
            once = Path(self.params.once) if self.params.once else None
            if self.params.crash and not (once and once.exists()):
                if once:
                    once.touch()
                os._exit(1)
            return False
        self.send("frames", VideoFrame(image=np.zeros((4, 4, 3), np.uint8), capture_ns=time.monotonic_ns()))
        time.sleep(0.02)
        return True


class Refuser(Node):
    """Cannot run as configured: open() raises ConfigError, as a camera given a silent file does."""

    outputs = {"frames": Output(VideoFrame)}

    def open(self) -> None:
        self.refusal = "clips/talk.mp4: no video stream"
        raise ConfigError(self.refusal)

    def summary(self) -> str:
        return getattr(self, "refusal", "")


NODES = {**REGISTRY, "crasher": f"{__name__}:Crasher", "refuser": f"{__name__}:Refuser",
         "camera": "nodes.camera:Camera"}


def load(path: Path):
    return load_graph(path, NODES)


# -- the restart budget is per window ---------------------------------------------------------

def test_old_restarts_no_longer_count(tmp_path: Path) -> None:
    """Six crashes far apart are six recoveries; the same six within the window fail the graph."""
    graph = load(write_graph(tmp_path, {"src": {"type": "ticker"}},
                             settings={"max_restarts": 5, "restart_window_s": 60}))
    sup = Supervisor(graph, on_event=lambda _: None)
    node = sup.nodes["src"]
    try:
        for i in range(12):  # one crash every 30 minutes
            sup._fallen(node, "exited with code 1", now=1000.0 + i * 1800)
            assert not sup.failure and node.state == "restarting"
        assert node.restarts == 12 and len(node.recent) == 1
        # the backoff starts over too: it doubles per *recent* restart, and the first has none
        assert node.restart_at == 1000.0 + 11 * 1800
        delays = []
        for i in range(5):  # now five within a minute: the budget
            sup._fallen(node, "exited with code 1", now=30000.0 + i)
            delays.append(node.restart_at - (30000.0 + i))
        backoff = graph.settings.restart_backoff_s
        assert delays == pytest.approx([0.0, backoff, 2 * backoff, 4 * backoff, 8 * backoff])
        assert not sup.failure
        sup._fallen(node, "exited with code 1", now=30005.0)
        assert "restarted 5 times in the last 60 s" in sup.failure and node.state == "failed"
    finally:
        sup.ctx.term()
        sup.run_dir.rmdir()  # never started: nothing in it


def test_a_node_crashing_slower_than_the_window_keeps_the_graph_alive(tmp_path: Path) -> None:
    """max_restarts 1 per 0.3 s, a node that crashes every ~0.5 s or more: never given up on, and
    the run still reports it failed when it ends (exit 1, naming the node)."""
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "crasher", "params": {"life_s": 0.5}},
        "rec": {"type": "recorder", "params": {"path": str(rec)}, "inputs": {"frames": "src/frames"}},
    }, settings={"max_restarts": 1, "restart_window_s": 0.3, "restart_backoff_s": 0.05}))
    bg = Background(graph, timeout_s=8)
    with bg as sup:
        bg.thread.join(60)
    assert sup.nodes["src"].restarts >= 3, bg.events  # with a budget for the whole run, the 2nd crash ended it
    assert bg.code == FAILED and "giving up" not in sup.failure
    assert sup.failure.startswith("node 'src' exited with code 1 (") and "restarts in the run" in sup.failure, sup.failure


def test_a_graph_that_ends_after_a_crash_is_not_a_success(tmp_path: Path) -> None:
    """The node crashes once, comes back and finishes: every node finished, and still exit 1."""
    graph = load(write_graph(tmp_path, {
        "src": {"type": "crasher", "params": {"life_s": 0.3, "once": str(tmp_path / "crashed")}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "src/frames"}},
    }, settings={"restart_backoff_s": 0.05}))
    bg = Background(graph, timeout_s=60)
    with bg as sup:
        bg.thread.join(60)
    assert all(n.state == "finished" for n in sup.nodes.values()), bg.events
    assert bg.code == FAILED and sup.failure == "node 'src' exited with code 1 (1 restart in the run)", sup.failure


def test_a_clean_run_is_a_success(tmp_path: Path) -> None:
    graph = load(write_graph(tmp_path, {
        "src": {"type": "crasher", "params": {"life_s": 0.5, "crash": False}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "src/frames"}},
    }))
    bg = Background(graph, timeout_s=30)
    with bg as sup:
        bg.thread.join(40)
    assert bg.code == FINISHED and not sup.failure, (bg.code, sup.failure, bg.events)


def test_the_restart_delay_is_none_first_then_doubles_to_its_cap() -> None:
    from pipeline.supervisor import restart_delay

    assert [restart_delay(n, 0.5, 3.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_killed_node_is_noticed_at_once_and_restarted_without_the_backoff(tmp_path: Path) -> None:
    """kill -9: the supervisor wakes on the process's exit (the fork server's word of it, or the
    process's pidfd), not on a heartbeat or its next look round, and the first restart in the window
    goes out in the same pass, without the 0.5 s backoff (issue 15). Heartbeats are 20 s apart here,
    so nothing else wakes the supervisor's 3 s wait."""
    graph = load(write_graph(tmp_path, {"src": {"type": "ticker", "params": {"rate_hz": 10}}},
                             settings={"heartbeat_s": 20, "heartbeat_timeout_s": 60, "restart_backoff_s": 0.5}))
    sup = Supervisor(graph, on_event=lambda _: None)
    node = sup.nodes["src"]
    try:
        sup.start()
        deadline = time.monotonic() + 60
        while not (node.state == "running" and node.stats.get("outputs", {}).get("frames", {}).get("sent")):
            assert time.monotonic() < deadline, "the ticker did not get going"
            sup.poll(0.1)
        time.sleep(0.5)
        while sup.telemetry_in.poll(0):  # beats already on their way
            sup._on_heartbeat(sup.telemetry_in.recv_multipart(copy=False))
        victim = node.proc.pid
        os.kill(victim, 9)
        killed = time.monotonic()
        sup.poll(3.0)
        took = time.monotonic() - killed
        assert node.restarts == 1 and node.proc.pid != victim and node.state == "starting", (node.state, took)
        assert took < 1.0, f"the death was seen after {took:.2f} s"
        assert node.restart_at == node.recent[-1], "the first restart in the window waited a backoff"
    finally:
        sup.shutdown()


def test_a_crash_loop_still_backs_off_doubling_and_gives_up(tmp_path: Path) -> None:
    """A node that crashes as soon as it runs: restarted at once the first time, then after 0.3 s,
    0.6 s (the doubling backoff stays for a loop), and given up on past max_restarts."""
    graph = load(write_graph(tmp_path, {"src": {"type": "crasher", "params": {"life_s": 0.0}}},
                             settings={"max_restarts": 3, "restart_window_s": 60, "restart_backoff_s": 0.3}))
    bg = Background(graph, timeout_s=60)
    sup = bg.supervisor
    times: list[tuple[str, float]] = []
    spawn, fallen = sup._spawn, sup._fallen

    def spawned(node) -> None:
        times.append(("spawn", time.monotonic()))
        spawn(node)

    def fell(node, why, now) -> None:
        times.append(("fall", now))
        fallen(node, why, now)

    sup._spawn, sup._fallen = spawned, fell
    with bg:
        bg.thread.join(60)
    assert bg.code == FAILED and "giving up" in sup.failure and "restarted 3 times" in sup.failure, sup.failure
    kinds = [k for k, _ in times]
    assert kinds == ["spawn", "fall", "spawn", "fall", "spawn", "fall", "spawn", "fall"], kinds
    waits = [times[i + 1][1] - times[i][1] for i in range(1, 7, 2)]  # each fall → the next spawn
    assert waits[0] < 0.25, waits
    assert waits[1] >= 0.3 - 0.01 and waits[2] >= 0.6 - 0.01, waits


def _relay_graph(tmp_path: Path):
    return load(write_graph(tmp_path, {
        "src": {"type": "ticker", "params": {"rate_hz": 100}},
        "relay": {"type": "relay", "inputs": {"frames": "src/frames"}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "relay/frames"}},
    }, settings={"heartbeat_s": 0.2}))


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the fork server needs pidfds (Linux ≥ 5.3)")
def test_nodes_are_forked_from_the_fork_server_and_a_lost_server_is_replaced(tmp_path: Path) -> None:
    """Every node's process is a child of the fork server (which imported the runtime once). If the
    server itself is killed, its nodes go (SIGTERM, as with a dead supervisor), the supervisor counts
    them as fallen, starts another server and restarts them; output flows again."""
    from pipeline.supervisor import ForkedProcess
    from tests.runtime_nodes import read_records

    rec = tmp_path / "rec.jsonl"
    bg = Background(_relay_graph(tmp_path), timeout_s=120)
    with bg as sup:
        assert _wait(lambda: len(read_records(rec)) > 20, 60), bg.events
        server = sup.forks.proc.pid
        for node in sup.nodes.values():
            assert isinstance(node.proc, ForkedProcess)
            assert int(Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == server
        first = {name: node.proc.pid for name, node in sup.nodes.items()}
        os.kill(server, 9)
        assert _wait(lambda: all(n.restarts >= 1 and n.state == "running" for n in sup.nodes.values()), 60), bg.events
        assert sup.forks.proc.pid != server and not sup.forks.dead
        assert all(sup.nodes[name].proc.pid != pid and _gone(pid) for name, pid in first.items())
        flowed = len(read_records(rec))
        assert _wait(lambda: len(read_records(rec)) > flowed + 20, 60), "output did not resume"
        pids = [n.proc.pid for n in sup.nodes.values()] + [sup.forks.proc.pid]
    assert all(_gone(pid) for pid in pids), "a node or the fork server outlived the supervisor"


def test_without_the_fork_server_each_node_is_its_own_interpreter(tmp_path: Path, monkeypatch) -> None:
    """EARSHOT_FORK_SERVER=0 (or no pidfds): nodes are ``python -m pipeline.runner``, and a kill -9
    is still seen at once (the process's pidfd) and restarted without a backoff."""
    import signal
    import subprocess

    from pipeline.supervisor import FORK_SERVER_ENV
    from tests.runtime_nodes import read_records

    monkeypatch.setenv(FORK_SERVER_ENV, "0")
    rec = tmp_path / "rec.jsonl"
    bg = Background(_relay_graph(tmp_path), timeout_s=120)
    with bg as sup:
        assert sup.forks is None
        assert _wait(lambda: len(read_records(rec)) > 20, 60), bg.events
        relay = sup.nodes["relay"]
        assert isinstance(relay.proc, subprocess.Popen)
        victim = relay.proc.pid
        os.kill(victim, signal.SIGKILL)
        assert _wait(lambda: relay.restarts == 1 and relay.state == "running", 60), bg.events
        flowed = len(read_records(rec))
        assert _wait(lambda: len(read_records(rec)) > flowed + 20, 60), "output did not resume"
    assert any("'relay' exited with signal SIGKILL; restart 1/5 now" in e for e in bg.events), bg.events


def test_restart_window_must_be_positive(tmp_path: Path) -> None:
    from pipeline.graph import GraphError

    with pytest.raises(GraphError, match="restart_window_s must be > 0"):
        load(write_graph(tmp_path, {"src": {"type": "ticker"}}, settings={"restart_window_s": 0}))


# -- a ConfigError is reported once, not retried ------------------------------------------------

def test_a_config_error_at_open_stops_the_graph_at_once_without_restarts(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    graph = load(write_graph(tmp_path, {
        "src": {"type": "refuser"},
        "other": {"type": "ticker"},
        "rec": {"type": "recorder", "params": {"path": str(rec)},
                "inputs": {"frames": "src/frames"}},
    }))
    bg = Background(graph, timeout_s=60)
    t0 = time.monotonic()
    with bg as sup:
        bg.thread.join(60)
        run_dir = sup.run_dir
    assert bg.code == CONFIG_ERROR
    assert time.monotonic() - t0 < 15
    assert sup.failure == "node 'src': clips/talk.mp4: no video stream", sup.failure
    assert sup.nodes["src"].restarts == 0 and not any("restart" in e for e in bg.events), bg.events
    assert not run_dir.exists()


def test_a_camera_file_spoiled_after_the_preflight_is_a_config_error_at_open(tmp_path: Path) -> None:
    """The preflight passed, then the file changed: the camera's open() says so, once, exit 2."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(DEMO_CLIP.read_bytes())
    graph = load(write_graph(tmp_path, {
        "camera": {"type": "camera", "params": {"source": str(clip)}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "camera/frames"}},
    }))
    bg = Background(graph, timeout_s=60)  # the preflight runs here, on the good file
    clip.write_bytes(DEMO_CLIP.read_bytes()[:1000])
    with bg as sup:
        bg.thread.join(60)
    assert bg.code == CONFIG_ERROR, bg.events
    assert sup.failure.startswith(f"node 'camera': {clip}: cannot open as video"), sup.failure
    assert sup.nodes["camera"].restarts == 0


def test_launch_exits_non_zero_when_a_node_failed_during_duration(tmp_path: Path) -> None:
    import subprocess

    path = write_graph(tmp_path, {
        "src": {"type": "crasher", "params": {"life_s": 0.4}},
        "rec": {"type": "recorder", "params": {"path": str(tmp_path / "rec.jsonl")}, "inputs": {"frames": "src/frames"}},
    }, settings={"restart_backoff_s": 0.05, "max_restarts": 100})
    env = {**os.environ, "EARSHOT_NODE_PLUGINS": f"{__name__}:NODES"}
    proc = subprocess.run([sys.executable, "launch.py", str(path), "--duration", "4"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == FAILED, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("[earshot] graph failed: node 'src' exited with code 1"), proc.stderr[-2000:]


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
