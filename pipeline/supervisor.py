"""Starts every node in its own process, watches them, restarts the fallen.

The supervisor is deliberately dumb about data: it never touches a frame. It owns the
run directory (ipc endpoints live there), the telemetry sockets, the start barrier and
the restart policy:

* exit code 0 → the node finished (a file ran out); it is not restarted;
* exit code 2 (:data:`CONFIG_ERROR_EXIT`, a node's :class:`ConfigError`) → the node cannot run as
  configured (a file that does not decode, a video without the audio it was asked for): no
  restart can fix that, so the graph stops at once and :attr:`Supervisor.failure` is the one line
  saying which node, which file and why (the node's last heartbeat carries it);
* any other exit, or no heartbeat for ``heartbeat_timeout_s`` → restart, up to ``max_restarts``
  within ``restart_window_s``; past that the graph cannot run, everything is stopped and the
  reason is returned. The first fall of a node with no restart in the window is restarted at
  once (a one-off crash or kill -9 should cost only the new process's start, issue 15); each
  further one waits a backoff, ``restart_backoff_s`` and doubling per recent restart (up to
  ``restart_backoff_max_s``), so a crash loop does not hammer the machine. Restarts older than
  the window no longer count: six crashes hours apart are six recoveries, not a failed graph;
* SIGINT/SIGTERM → every node gets SIGTERM, stragglers SIGKILL, the run dir is removed.

A death is noticed at once: the supervisor's wait wakes on a node's exit (the fork server's word
of it, or the process's pidfd, Linux ≥ 5.3) instead of at its next look round (elsewhere it looks
every 0.1 s, as before).

Node processes are forked from a fork server (:class:`ForkServer`, ``pipeline.runner.serve_forks``)
that has imported Python, numpy, ZeroMQ and the runtime once, so a restarted node pays only for its
own imports and ``open()``: on a loaded 2-core machine those shared imports alone took about a second
of a restart (issue 15). Where there is no fork server (not Linux, or ``EARSHOT_FORK_SERVER=0``), or
it cannot start, each node is its own ``python -m pipeline.runner`` as before.

The run directory holds the ``graph.json`` that nodes re-read when they restart, so it lives
under a base directory of the user's own (created 0700; refused if anyone else owns it or may
write to it).

A graph across hosts (``hosts:``) runs as one supervisor per host, each started with
``launch.py run --host NAME``: it starts, watches and summarises only its own host's nodes
(:meth:`GraphSpec.runs_here`). Hosts share nothing but data edges: tcp, CURVE-encrypted when they
leave the machine (`pipeline.keys`; a missing key stops the run before it starts, in one line).
ZeroMQ reconnects those edges by itself, so a host that restarts picks up the data flow again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from pipeline import keys
from pipeline.graph import GraphSpec, import_node_class
from pipeline.messages import Control, Heartbeat, MessageError, decode, encode
from pipeline import media_clock, progress
from pipeline.runner import MEDIA_CLOCK_FILE, SERVE_FORKS, die_with_parent, telemetry_endpoints

log = logging.getLogger("earshot.supervisor")


#: a node process that exits with this code cannot run as configured: it is not restarted
CONFIG_ERROR_EXIT = 2

#: exit codes of :meth:`Supervisor.run`
FINISHED, FAILED, CONFIG_ERROR, INTERRUPTED = 0, 1, CONFIG_ERROR_EXIT, 130

#: environment of every node: the run's token for remote views (``media.web_view``) and
#: whether the graph allows listening beyond loopback (``settings.allow_remote``)
TOKEN_ENV, ALLOW_REMOTE_ENV = "EARSHOT_WEB_TOKEN", "EARSHOT_ALLOW_REMOTE"
#: "0": start every node as its own interpreter, not from the fork server
FORK_SERVER_ENV = "EARSHOT_FORK_SERVER"


class ConfigError(SystemExit):
    """Raised by a node's ``open()`` for a mistake no restart can fix: a file that cannot be
    opened or decoded, a file without the stream the node reads. ``reason`` is one line that
    starts with the file (``demo/x.mp4: no audio stream``); the node also returns it from
    ``summary()``, so its last heartbeat tells the supervisor, which prints it once.

    A ``SystemExit``, so that it passes the runner's crash handler (which is for bugs: it logs
    a traceback and exits 1) and ends the node's process with :data:`CONFIG_ERROR_EXIT`."""

    def __init__(self, reason: str) -> None:
        super().__init__(CONFIG_ERROR_EXIT)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class CannotRun(RuntimeError):
    """The graph cannot run here as configured, found before anything started: a node's
    preflight refused (a file that does not decode), or the run base directory is not safe.
    The message is the one line to show."""


#: glibc malloc: a fixed mmap threshold (1 MiB) instead of the dynamic one, which rises after the first large
#: free and then serves frame-sized buffers from the heap, where they fragment it. In a looping demo the
#: renderer grew ~1.7 MiB a minute without it and +0.5 % over 3 minutes with it (`benchmarks/soak.py`).
#: A value in the caller's environment wins; other C libraries ignore it.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}


def preflight(graph: GraphSpec) -> None:
    """Run each node type's own ``preflight(params)`` (a classmethod, where it has one) here,
    before any process starts, so a file that cannot be read stops the run in this process in
    one line (:class:`CannotRun`), not after nine processes loaded their models. A node checks
    the same again in ``open()`` (the file may change, a node may restart), with ConfigError."""
    for name, spec in graph.nodes.items():
        if not graph.runs_here(name):  # another host's: its files and devices are there, not here
            continue
        cls = import_node_class(spec.impl)
        check = getattr(cls, "preflight", None)
        if check is None:
            continue
        try:
            check(cls.make_params(spec.params))
        except ConfigError as exc:
            raise CannotRun(f"node {name!r}: {exc.reason}") from None


def run_base_dir() -> Path:
    """Where run directories live; short, because ipc paths are limited to ~107 bytes."""
    base = os.environ.get("EARSHOT_RUN_BASE") or os.path.join(tempfile.gettempdir(), f"earshot-{os.getuid()}")
    return Path(base)


def secure_run_base() -> Path:
    """The run base directory, created 0700, or :class:`CannotRun` if it is not the user's own.

    Nodes re-read ``graph.json`` from their run dir whenever they restart, so another local user
    who can write there (a base pre-created world-writable in /tmp, or owned by them) could make
    our nodes run what they like."""
    base = run_base_dir()
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(base)
    except OSError as exc:
        raise CannotRun(f"run base directory {base}: {exc.strerror or exc}") from None
    fix = "remove it or set EARSHOT_RUN_BASE to a directory of your own"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise CannotRun(f"run base directory {base} is {what}; {fix}")
    if info.st_uid != os.getuid():
        raise CannotRun(f"run base directory {base} is owned by uid {info.st_uid}, not by you "
                        f"(uid {os.getuid()}); {fix}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CannotRun(f"run base directory {base} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                        f"chmod 700 it, {fix}")
    return base


@dataclass
class NodeProcess:
    name: str
    proc: Any = None  # subprocess.Popen, or a ForkedProcess (the fork server's child)
    state: str = "starting"  # starting | ready | running | finished | restarting | failed
    restarts: int = 0  # in the whole run, for the summary
    recent: deque = field(default_factory=deque)  # monotonic times of the restarts within the window
    restart_at: float = 0.0
    last_beat: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    said: str = ""  # the state its last heartbeat reported ("failed" in the one it sends as it exits)
    exit_code: int | None = None
    pidfd: int | None = None  # readable once proc exits (pidfd_open); None where the OS has none

    def forget_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class ForkServerGone(RuntimeError):
    """The fork server exited or stopped answering."""


class ForkServer:
    """The supervisor's end of ``pipeline.runner.serve_forks``: asks it for node processes, hears when
    they exit. Thread-safe (a test or benchmark may poll a node's process from its own thread)."""

    def __init__(self, env: dict[str, str], cwd: str, timeout_s: float = 60.0) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE_FORKS, str(theirs.fileno())], env=env, cwd=cwd,
                                         stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()],
                                         preexec_fn=die_with_parent)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        self.lock = threading.RLock()
        self.dead = False
        self.codes: dict[int, int] = {}  # pid → exit code, of children not yet asked about
        self.spawned: deque = deque()  # (pid, pidfd) answers not yet taken
        self.ready = False
        self.collect(timeout_s, until=lambda: self.ready)
        if not self.ready:
            self.close()
            raise ForkServerGone(f"the fork server did not start in {timeout_s:.0f} s")

    def fileno(self) -> int:
        return self.sock.fileno()

    def collect(self, timeout_s: float = 0.0, until: Callable[[], bool] | None = None) -> None:
        """Take what the server said, waiting up to ``timeout_s`` for a first word (or for ``until``)."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while not self.dead and not (until and until()):
                left = max(0.0, deadline - time.monotonic())
                if not select.select([self.sock], [], [], left)[0]:
                    return
                try:
                    data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 1)
                except OSError:
                    data, fds = b"", []
                if not data:
                    self.dead = True
                    return
                said = json.loads(data)
                if "pid" in said:
                    self.spawned.append((said["pid"], fds[0]))
                elif "exited" in said:
                    self.codes[said["exited"]] = said["code"]
                elif "ready" in said:
                    self.ready = True
                if until is None:
                    deadline = 0.0  # a word came: take what else is there, without waiting

    def spawn(self, name: str, run_dir: str, env: dict[str, str], cwd: str, timeout_s: float = 30.0) -> "ForkedProcess":
        with self.lock:
            if self.dead:
                raise ForkServerGone("the fork server has exited")
            try:
                self.sock.send(json.dumps({"node": name, "run_dir": run_dir, "env": env, "cwd": cwd}).encode())
            except OSError as exc:
                self.dead = True
                raise ForkServerGone(f"the fork server is gone: {exc}") from None
            self.collect(timeout_s, until=lambda: bool(self.spawned))
            if not self.spawned:
                raise ForkServerGone(f"the fork server did not fork {name!r} in {timeout_s:.0f} s")
            pid, pidfd = self.spawned.popleft()
        return ForkedProcess(self, pid, pidfd, ["pipeline.runner", run_dir, name])

    def close(self) -> None:
        """No more nodes: the server exits when its socket closes (SIGKILL if it does not)."""
        with self.lock:  # not while another thread reads it
            self.sock.close()
            self.dead = True
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkedProcess:
    """A node's process forked by the fork server: what the supervisor uses of ``subprocess.Popen``
    (pid, poll, wait, send_signal, terminate, kill, returncode). Signals go through a pidfd, so they
    reach this process and never one that got its pid after it was reaped."""

    def __init__(self, server: ForkServer, pid: int, pidfd: int, args: list[str]) -> None:
        self.server, self.pid, self.pidfd, self.args = server, pid, pidfd, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.collect()
            code = self.server.codes.pop(self.pid, None)
            if code is None and self.server.dead and self.pidfd is not None and \
                    select.select([self.pidfd], [], [], 0)[0]:
                code = 1  # it exited after the server went: nobody reaped it for us, its code is lost
            if code is not None:
                self.returncode = code
                os.close(self.pidfd)
                self.pidfd = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.server.collect(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Supervisor:
    def __init__(self, graph: GraphSpec, run_dir: str | Path | None = None,
                 on_event: Callable[[str], None] | None = None, node_env: dict[str, str] | None = None,
                 record_to: str | Path | None = None, show_progress: bool | None = None) -> None:
        """``show_progress``: a lossless run over files shows a tqdm bar on stderr (True), lines every
        10 s through ``on_event`` (False), or a bar only when stderr is a terminal (None)."""
        self.graph = graph
        self.record_to = Path(record_to).resolve() if record_to else None
        self.recorder: subprocess.Popen | None = None
        if self.record_to and graph.host:
            raise CannotRun("--record records a graph that runs on one machine; with --host it is not supported yet")
        preflight(graph)
        graph.resolve_endpoints(None)  # the tcp ones, across hosts: the keys they need are checked now
        try:
            self.curve = keys.plan(graph)
        except keys.KeysMissing as exc:
            raise CannotRun(str(exc)) from None
        if self.record_to and self.curve["endpoints"]:
            raise CannotRun("--record cannot read CURVE-encrypted endpoints yet; record on a graph without remote ones")
        base = secure_run_base()
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"{graph.name[:12]}-", dir=base))
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.on_event = on_event or (lambda text: log.info("%s", text))
        tracked = progress.for_graph(graph)
        bar = sys.stderr.isatty() if show_progress is None else show_progress
        self.progress = tracked and progress.ProgressDisplay(tracked, bar, self.on_event)
        if self.progress:  # event lines must not tear the bar
            self.on_event = self.progress.around(self.on_event)
        self.node_env = node_env or {}
        self.nodes = {name: NodeProcess(name) for name in graph.nodes if graph.runs_here(name)}
        #: how long a node may take to send its first heartbeat: a publisher waits up to
        #: start_timeout_s per output for readers on other hosts before it says anything
        self.start_limit_s = {name: graph.settings.start_timeout_s * (1 + sum(
            graph.crosses_hosts(name, port) for port in graph.nodes[name].endpoints)) for name in self.nodes}
        self.epoch_ns = 0
        self.stopping = False
        self.failure = ""
        self.config_error = False  # failure is a node's ConfigError: exit CONFIG_ERROR, leave nothing
        self.falls: dict[str, str] = {}  # node → why it last fell (crash or hang), for the run's verdict
        #: remote web views need it (?token=…); one per run, so a restarted renderer keeps it
        self.web_token = secrets.token_urlsafe(18)
        self.ctx = zmq.Context()
        self.telemetry_in = self.telemetry_out = None
        self.forks: ForkServer | None = None

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.graph.resolve_endpoints(self.run_dir)
        if self.record_to:  # the recorder is one more reader of every output: nodes wait for it too
            for node in self.graph.nodes.values():
                for port in node.endpoints:
                    node.subscribers[port] = node.subscribers.get(port, 0) + 1
        (self.run_dir / "graph.json").write_text(json.dumps(self.graph.to_dict(), indent=1))
        (self.run_dir / "curve.json").write_text(json.dumps(self.curve, indent=1))  # file names, no keys
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
        if self.record_to:
            self.record_to.parent.mkdir(parents=True, exist_ok=True)
            self.recorder = subprocess.Popen([sys.executable, "-m", "pipeline.recording", str(self.run_dir),
                                              str(self.record_to)], stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        self._start_fork_server()
        for node in self.nodes.values():
            self._spawn(node)
        where = f" on host {self.graph.host!r}" if self.graph.host else ""
        share = f" of {len(self.graph.nodes)}" if self.graph.host else ""
        self.on_event(f"graph {self.graph.name!r}{where}: {len(self.nodes)}{share} nodes starting (run dir {self.run_dir})")
        for line in self._tcp_edges():
            self.on_event(line)

    def _env(self, node: NodeProcess | None) -> dict[str, str]:
        """A node's environment (``None``: the fork server's, all but the node's own identity)."""
        env = {**MALLOC_ENV, **os.environ, **self.node_env, "PYTHONUNBUFFERED": "1", TOKEN_ENV: self.web_token,
               ALLOW_REMOTE_ENV: "1" if self.graph.settings.allow_remote else "0",
               keys.PLAN_ENV: str(self.run_dir / "curve.json")}
        if node is not None:
            env[keys.IDENTITY_ENV] = keys.identity(self.graph, node.name)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _start_fork_server(self) -> None:
        if os.environ.get(FORK_SERVER_ENV, "1") == "0" or not hasattr(os, "pidfd_open") or \
                not hasattr(socket, "send_fds") or not sys.platform.startswith("linux"):
            return
        try:
            self.forks = ForkServer(self._env(None), os.getcwd(), timeout_s=self.graph.settings.start_timeout_s)
        except (OSError, ForkServerGone) as exc:
            log.warning("no fork server (%s): each node starts its own interpreter", exc)
            self.forks = None

    def _spawn(self, node: NodeProcess) -> None:
        env = self._env(node)
        node.forget_pidfd()
        if self.forks is not None and self.forks.dead and not self.stopping:
            log.warning("the fork server exited; starting another")
            self.forks.close()
            self._start_fork_server()
        proc: subprocess.Popen | ForkedProcess | None = None
        if self.forks is not None:
            try:
                proc = self.forks.spawn(node.name, str(self.run_dir), env, os.getcwd())
            except ForkServerGone as exc:
                log.warning("%s: starting node %r as its own interpreter", exc, node.name)
        if proc is None:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.runner", str(self.run_dir), node.name],
                env=env, cwd=os.getcwd(), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
            node.pidfd = _pidfd(proc.pid)
        node.proc = proc
        node.state = "starting"
        node.last_beat = time.monotonic()
        node.exit_code = None
        node.said = ""

    def _tcp_edges(self) -> list[str]:
        """One line per output that crosses hosts in this run: where it goes, and whether CURVE guards it."""
        graph, lines = self.graph, []
        for name, node in graph.nodes.items():
            for port, endpoint in node.endpoints.items():
                if not graph.crosses_hosts(name, port):
                    continue
                guard = "CURVE" if endpoint in self.curve["endpoints"] else "plain tcp, loopback"
                readers = [r for r in graph.readers(name, port) if graph.nodes[r].host != node.host]
                if graph.runs_here(name):
                    lines.append(f"{name}/{port} → {', '.join(f'{r} on {graph.nodes[r].host}' for r in readers)}: "
                                 f"serving {endpoint} ({guard})")
                elif any(graph.runs_here(r) for r in readers):
                    lines.append(f"{name}/{port} from host {node.host!r}: reading {endpoint} ({guard})")
        return lines

    # -- watch ---------------------------------------------------------------------------

    def run(self, timeout_s: float | None = None) -> int:
        """Supervise until every node finished (0), the graph failed (1), a node cannot run as
        configured (2) or we were stopped (130). A run that ends (or reaches ``timeout_s``) after
        a node crashed or hung on the way is a failed run too (1): its outputs may have holes."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            while not self.stopping:
                self.poll(0.1)
                if self.failure:
                    return CONFIG_ERROR if self.config_error else FAILED
                if all(n.state == "finished" for n in self.nodes.values()):
                    return self._verdict()
                if deadline and time.monotonic() > deadline:
                    self.on_event(f"stopping after {timeout_s:.0f} s as asked")
                    return self._verdict()
            return INTERRUPTED
        finally:
            self.shutdown()

    def _verdict(self) -> int:
        """FINISHED, or FAILED with the reason if a node fell during the run (even if it came back)."""
        if not self.falls:
            return FINISHED
        self.failure = "; ".join(f"node {name!r} {why} ({self.nodes[name].restarts} restart"
                                 f"{'s' if self.nodes[name].restarts != 1 else ''} in the run)"
                                 for name, why in self.falls.items())
        return FAILED

    def poll(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for heartbeats, a node's exit or a restart falling due; then handle
        the beats and look at every node."""
        due = [n.restart_at for n in self.nodes.values() if n.state == "restarting"]
        if due:
            wait_s = min(wait_s, max(0.0, min(due) - time.monotonic()))
        poller = zmq.Poller()
        poller.register(self.telemetry_in, zmq.POLLIN)
        if self.forks is not None and not self.forks.dead:
            poller.register(self.forks.fileno(), zmq.POLLIN)  # it says when a node of ours exited
        for node in self.nodes.values():
            if node.pidfd is not None:
                poller.register(node.pidfd, zmq.POLLIN)
            elif isinstance(node.proc, ForkedProcess) and node.proc.server.dead and node.proc.pidfd is not None:
                poller.register(node.proc.pidfd, zmq.POLLIN)  # its server is gone: its pidfd is all there is
        ready = dict(poller.poll(int(wait_s * 1000)))
        if self.forks is not None and self.forks.fileno() in ready:
            self.forks.collect()
        if self.telemetry_in in ready:
            while self.telemetry_in.poll(0):
                self._on_heartbeat(self.telemetry_in.recv_multipart(copy=False))
        now = time.monotonic()
        for node in self.nodes.values():
            self._check(node, now)
        self._maybe_start()
        if self.progress:
            self.progress.tick()

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
        node.said = beat.state
        if self.progress:
            self.progress.progress.observe(beat.node, beat.stats, node.last_beat)
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
            if self.progress:
                self.progress.start()

    def _send_start(self) -> None:
        self.telemetry_out.send_multipart(encode(Control(command="start", epoch_ns=self.epoch_ns)))

    def _check(self, node: NodeProcess, now: float) -> None:
        self._look(node, now)
        if node.state == "restarting" and now >= node.restart_at and not self.stopping:
            self._spawn(node)  # in the same pass as the fall when no backoff is due

    def _look(self, node: NodeProcess, now: float) -> None:
        settings = self.graph.settings
        if node.state in ("restarting", "finished", "failed") or node.proc is None:
            return
        code = node.proc.poll()
        if code is None:
            limit = self.start_limit_s[node.name] if node.state in ("starting", "ready") else settings.heartbeat_timeout_s
            if now - node.last_beat > limit:
                self.on_event(f"node {node.name!r}: no heartbeat for {now - node.last_beat:.1f} s; killing it")
                node.proc.kill()
                node.proc.wait()
                node.forget_pidfd()
                self._fallen(node, "hung", now)
            return
        node.forget_pidfd()  # it exited: nothing more to wake on
        node.exit_code = code
        if code == 0 and not self.stopping:
            node.state = "finished"
            self.on_event(f"node {node.name!r} finished")
        elif code == CONFIG_ERROR_EXIT and not self.stopping:
            self._refused(node)
        else:
            self._fallen(node, f"exited with {_describe(code)}", now)

    def _refused(self, node: NodeProcess) -> None:
        """A node's ConfigError: its reason comes in its last heartbeat, sent as it closed."""
        deadline = time.monotonic() + 1.0
        while node.said != "failed" and time.monotonic() < deadline:
            if self.telemetry_in.poll(50):
                self._on_heartbeat(self.telemetry_in.recv_multipart(copy=False))
        reason = (node.said == "failed" and node.stats.get("summary")) or \
            "cannot run as configured (it exited with code 2 and said no more)"
        node.state = "failed"
        self.config_error = True
        self.failure = f"node {node.name!r}: {reason}"

    def _fallen(self, node: NodeProcess, why: str, now: float) -> None:
        settings = self.graph.settings
        self.falls[node.name] = why
        while node.recent and now - node.recent[0] > settings.restart_window_s:
            node.recent.popleft()  # long ago: it recovered since
        if len(node.recent) >= settings.max_restarts:
            node.state = "failed"
            self.failure = (f"node {node.name!r} {why} and was restarted {len(node.recent)} times in the last "
                            f"{settings.restart_window_s:g} s already; giving up")
            self.on_event(self.failure)
            return
        delay = restart_delay(len(node.recent), settings.restart_backoff_s, settings.restart_backoff_max_s)
        node.recent.append(now)
        node.restarts += 1
        node.state = "restarting"
        node.restart_at = now + delay
        self.on_event(f"node {node.name!r} {why}; restart {len(node.recent)}/{settings.max_restarts} "
                      + (f"in {delay:.1f} s" if delay else "now"))

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def shutdown(self, grace_s: float = 5.0) -> None:
        """SIGTERM everyone, wait, SIGKILL stragglers, remove the run dir.

        A graph stopped by a ConfigError before it started gets SIGKILL at once: its nodes have
        read nothing, so they have nothing to finish, and closing would leave half-made outputs
        (an empty voices.json) behind a run that never ran."""
        self.stopping = True
        live = [n.proc for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        never_ran = self.config_error and not self.epoch_ns
        for proc in live:
            proc.send_signal(signal.SIGKILL if never_ran else signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes.values():
            node.forget_pidfd()
        if self.forks is not None:
            self.forks.close()
        if self.recorder is not None:  # it stops by itself once every output ended; a stopped graph's do not
            try:
                self.recorder.wait(2.0)
            except subprocess.TimeoutExpired:
                self.recorder.terminate()
                self.recorder.wait(10)
        # the last heartbeats carry the artifacts a node wrote while closing
        while self.telemetry_in is not None and self.telemetry_in.poll(50):
            self._on_heartbeat(self.telemetry_in.recv_multipart(copy=False))
        if self.progress:  # its last state, from those last heartbeats, before the closing summary
            self.progress.close()
        for sock in (self.telemetry_in, self.telemetry_out):
            if sock is not None:
                sock.close(linger=0)
        self.telemetry_in = self.telemetry_out = None
        self.ctx.term()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def artifacts(self) -> list[str]:
        """Files the nodes reported writing that exist now (a node killed mid-write may have named one it never finished)."""
        recorded = [str(self.record_to)] if self.record_to else []
        return [a for a in [*(a for n in self.nodes.values() for a in n.stats.get("artifacts", [])), *recorded]
                if Path(a).exists()]

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


def restart_delay(recent: int, backoff_s: float, max_s: float) -> float:
    """How long a node that fell waits for its restart, given how many times it was restarted within
    the window already: the first fall none (a one-off crash or kill -9 costs only the new process's
    start), then ``backoff_s`` doubling per further recent restart, at most ``max_s``."""
    if recent <= 0:
        return 0.0
    return min(backoff_s * 2 ** (recent - 1), max_s)


def _pidfd(pid: int) -> int | None:
    """A file descriptor that polls readable once ``pid`` exits (Linux ≥ 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


