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
        # the backoff starts over too: it doubles per *recent* restart
        assert node.restart_at - (1000.0 + 11 * 1800) == pytest.approx(graph.settings.restart_backoff_s)
        for i in range(5):  # now five within a minute: the budget
            sup._fallen(node, "exited with code 1", now=30000.0 + i)
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
