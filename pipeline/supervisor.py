"""Starts every node in its own process, watches them, restarts the fallen.

The supervisor is deliberately dumb about data: it never touches a frame. It owns the
run directory (ipc endpoints live there), the telemetry sockets, the start barrier and
the restart policy:

* exit code 0 → the node finished (a file ran out); it is not restarted;
* any other exit, or no heartbeat for ``heartbeat_timeout_s`` → restart after a backoff
  that doubles per restart of that node, up to ``max_restarts``; past that the graph
  cannot run, everything is stopped and the reason is returned;
* SIGINT/SIGTERM → every node gets SIGTERM, stragglers SIGKILL, the run dir is removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from pipeline.graph import GraphSpec
from pipeline.messages import Control, Heartbeat, MessageError, decode, encode
from pipeline import media_clock
from pipeline.runner import MEDIA_CLOCK_FILE, telemetry_endpoints

log = logging.getLogger("earshot.supervisor")


def run_base_dir() -> Path:
    """Where run directories live; short, because ipc paths are limited to ~107 bytes."""
    base = os.environ.get("EARSHOT_RUN_BASE") or os.path.join(tempfile.gettempdir(), f"earshot-{os.getuid()}")
    return Path(base)


@dataclass
class NodeProcess:
    name: str
    proc: subprocess.Popen | None = None
    state: str = "starting"  # starting | ready | running | finished | restarting | failed
    restarts: int = 0
    restart_at: float = 0.0
    last_beat: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


class Supervisor:
    def __init__(self, graph: GraphSpec, run_dir: str | Path | None = None,
                 on_event: Callable[[str], None] | None = None, node_env: dict[str, str] | None = None) -> None:
        self.graph = graph
        base = run_base_dir()
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"{graph.name[:12]}-", dir=base))
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.on_event = on_event or (lambda text: log.info("%s", text))
        self.node_env = node_env or {}
        self.nodes = {name: NodeProcess(name) for name in graph.nodes}
        self.epoch_ns = 0
        self.stopping = False
        self.failure = ""
        self.ctx = zmq.Context()
        self.telemetry_in = self.telemetry_out = None

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.graph.resolve_endpoints(self.run_dir)
        (self.run_dir / "graph.json").write_text(json.dumps(self.graph.to_dict(), indent=1))
        if self.graph.settings.pace == "lossless":
            media_clock.create(self.run_dir / MEDIA_CLOCK_FILE, self.graph.sources)
        (self.run_dir / "supervisor.pid").write_text(str(os.getpid()))
        tel_in, tel_out = telemetry_endpoints(self.run_dir)
        self.telemetry_in = self.ctx.socket(zmq.PULL)
        self.telemetry_in.setsockopt(zmq.LINGER, 0)
        self.telemetry_in.bind(tel_in)
        self.telemetry_out = self.ctx.socket(zmq.PUB)
        self.telemetry_out.setsockopt(zmq.LINGER, 0)
        self.telemetry_out.bind(tel_out)
        for node in self.nodes.values():
            self._spawn(node)
        self.on_event(f"graph {self.graph.name!r}: {len(self.nodes)} nodes starting (run dir {self.run_dir})")

    def _spawn(self, node: NodeProcess) -> None:
        env = {**os.environ, **self.node_env, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.runner", str(self.run_dir), node.name],
            env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        node.state = "starting"
        node.last_beat = time.monotonic()
        node.exit_code = None

    # -- watch ---------------------------------------------------------------------------

    def run(self, timeout_s: float | None = None) -> int:
        """Supervise until every node finished (0), the graph failed (1) or we were stopped (130)."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            while not self.stopping:
                self.poll(0.1)
                if self.failure:
                    return 1
                if all(n.state == "finished" for n in self.nodes.values()):
                    return 0
                if deadline and time.monotonic() > deadline:
                    self.on_event(f"stopping after {timeout_s:.0f} s as asked")
                    return 0
            return 130
        finally:
            self.shutdown()

    def poll(self, wait_s: float) -> None:
        if self.telemetry_in.poll(int(wait_s * 1000)):
            while self.telemetry_in.poll(0):
                self._on_heartbeat(self.telemetry_in.recv_multipart(copy=False))
        now = time.monotonic()
        for node in self.nodes.values():
            self._check(node, now)
        self._maybe_start()

    def _on_heartbeat(self, frames: list) -> None:
        try:
            beat = decode(frames)
        except MessageError as exc:
            log.warning("bad heartbeat: %s", exc)
            return
        if not isinstance(beat, Heartbeat) or beat.node not in self.nodes:
            return
        node = self.nodes[beat.node]
        if node.proc is None or beat.pid != node.proc.pid:
            return  # a late beat from a previous incarnation
        node.last_beat = time.monotonic()
        node.stats = beat.stats
        if node.state in ("starting", "ready", "running") and beat.state in ("ready", "running"):
            node.state = beat.state
            if beat.state == "ready" and self.epoch_ns:
                self._send_start()  # a restarted node joins the running graph (it asks until heard)
        self.telemetry_out.send_multipart(encode(beat))

    def _maybe_start(self) -> None:
        if self.epoch_ns:
            return
        if all(n.state in ("ready", "running", "finished") for n in self.nodes.values()):
            self.epoch_ns = time.monotonic_ns() + 50_000_000  # a little slack for every node to hear it
            self._send_start()
            self.on_event(f"graph {self.graph.name!r}: all nodes ready, started")

    def _send_start(self) -> None:
        self.telemetry_out.send_multipart(encode(Control(command="start", epoch_ns=self.epoch_ns)))

    def _check(self, node: NodeProcess, now: float) -> None:
        settings = self.graph.settings
        if node.state == "restarting":
            if now >= node.restart_at:
                self._spawn(node)
            return
        if node.state in ("finished", "failed") or node.proc is None:
            return
        code = node.proc.poll()
        if code is None:
            limit = settings.start_timeout_s if node.state in ("starting", "ready") else settings.heartbeat_timeout_s
            if now - node.last_beat > limit:
                self.on_event(f"node {node.name!r}: no heartbeat for {now - node.last_beat:.1f} s; killing it")
                node.proc.kill()
                node.proc.wait()
                self._fallen(node, "hung", now)
            return
        node.exit_code = code
        if code == 0 and not self.stopping:
            node.state = "finished"
            self.on_event(f"node {node.name!r} finished")
        else:
            self._fallen(node, f"exited with {_describe(code)}", now)

    def _fallen(self, node: NodeProcess, why: str, now: float) -> None:
        settings = self.graph.settings
        if node.restarts >= settings.max_restarts:
            node.state = "failed"
            self.failure = f"node {node.name!r} {why} and was restarted {node.restarts} times already; giving up"
            self.on_event(self.failure)
            return
        delay = min(settings.restart_backoff_s * 2 ** node.restarts, settings.restart_backoff_max_s)
        node.restarts += 1
        node.state = "restarting"
        node.restart_at = now + delay
        self.on_event(f"node {node.name!r} {why}; restart {node.restarts}/{settings.max_restarts} in {delay:.1f} s")

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def shutdown(self, grace_s: float = 5.0) -> None:
        """SIGTERM everyone, wait, SIGKILL stragglers, remove the run dir."""
        self.stopping = True
        live = [n.proc for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # the last heartbeats carry the artifacts a node wrote while closing
        while self.telemetry_in is not None and self.telemetry_in.poll(50):
            self._on_heartbeat(self.telemetry_in.recv_multipart(copy=False))
        for sock in (self.telemetry_in, self.telemetry_out):
            if sock is not None:
                sock.close(linger=0)
        self.telemetry_in = self.telemetry_out = None
        self.ctx.term()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def artifacts(self) -> list[str]:
        """Files the nodes reported writing that exist now (a node killed mid-write may have named one it never finished)."""
        return [a for n in self.nodes.values() for a in n.stats.get("artifacts", []) if Path(a).exists()]

    def summary(self) -> list[str]:
        """The run's closing report from the nodes' last heartbeats: what each produced, what was
        dropped or lost on the way (per input, with the reason), errors and restarts."""
        lines = []
        for name, node in self.nodes.items():
            stats = node.stats
            losses = []
            for port, s in stats.get("inputs", {}).items():
                for key in ("dropped", "lost", "bad"):
                    if s.get(key):
                        losses.append(f"{port}: {s[key]} {key}")
            errors = stats.get("counters", {}).get("errors", 0)
            if errors:
                losses.append(f"{errors} errors")
            if node.restarts:
                losses.append(f"{node.restarts} restarts")
            said = stats.get("summary") or ""
            lines.append(f"{name}: {said}{'; ' if said and losses else ''}{', '.join(losses) or ('' if said else 'nothing dropped')}")
        return lines


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM a node when the supervisor dies, so none is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
