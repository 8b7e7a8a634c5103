"""Local security: the browser view stays on loopback unless the graph allows remote viewers, and then
wants the run's token; its connections and threads are bounded; the run base directory is the
user's own (nodes re-read graph.json from it when they restart)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from media.sinks.web import WebSink
from media.web_view import RemoteNotAllowed, WebView
from nodes import NODE_TYPES
from pipeline.graph import GraphError, load_graph
from pipeline.supervisor import CannotRun, secure_run_base
from tests.graphs import write_graph

ROOT = Path(__file__).resolve().parent.parent


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- remote binds --------------------------------------------------------------------------

def renderer_graph(tmp_path: Path, host: str, **settings) -> Path:
    return write_graph(tmp_path, {
        "camera": {"type": "camera", "params": {"source": "demo/demo.mp4"}},
        "renderer": {"type": "renderer", "params": {"web_port": 0, "web_host": host},
                     "inputs": {"video": "camera/frames"}},
    }, settings=settings)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_a_config_cannot_open_the_view_to_a_network_without_allow_remote(host: str, tmp_path: Path) -> None:
    with pytest.raises(GraphError, match=r"node 'renderer' params.web_host: .* is not loopback; set settings.allow_remote"):
        load_graph(renderer_graph(tmp_path, host), NODE_TYPES)
    load_graph(renderer_graph(tmp_path, host, allow_remote=True), NODE_TYPES)  # a deliberate choice


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_nothing(host: str, tmp_path: Path) -> None:
    load_graph(renderer_graph(tmp_path, host), NODE_TYPES)


def test_the_view_itself_refuses_a_remote_bind_without_allow_remote() -> None:
    with pytest.raises(RemoteNotAllowed):
        WebView(host="0.0.0.0")
    with pytest.raises(RemoteNotAllowed):
        WebSink(host="0.0.0.0", allow_remote=False).open()


def test_loopback_needs_no_token() -> None:
    with WebView(port=0) as view:
        assert view.token is None and "token" not in view.url
        assert get(view.url + "stats.json")[0] == 200


def test_a_remote_view_wants_the_token() -> None:
    with WebView(host="0.0.0.0", port=0, allow_remote=True, token="s3cret-token") as view:
        view.publish(np.zeros((8, 8, 3), np.uint8), [], 1)
        base = f"http://127.0.0.1:{view.port}/"
        assert view.url.endswith("/?token=s3cret-token")
        for path in ("", "stats.json", "frame.jpg", "stream.mjpg"):
            assert get(base + path)[0] == 403, path  # no token
            assert get(base + path + "?token=wrong")[0] == 403, path
            assert get(base + path + "?token=s3cret-tokenX")[0] == 403, path
        assert get(base + "stats.json", {"X-Earshot-Token": "nope"})[0] == 403
        assert get(base + "stats.json?token=s3cret-token")[0] == 200
        assert get(base + "stats.json", {"X-Earshot-Token": "s3cret-token"})[0] == 200
        assert get(base + "stats.json", {"Authorization": "Bearer s3cret-token"})[0] == 200
        code, page = get(base + "?token=s3cret-token")
        # the page asks for its stream and stats with the token it was opened with
        assert code == 200 and b"/stream.mjpg?token=s3cret-token" in page and b"/stats.json?token=s3cret-token" in page


def test_a_remote_sink_takes_the_runs_token_and_without_one_makes_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_ALLOW_REMOTE", "1")
    monkeypatch.setenv("EARSHOT_WEB_TOKEN", "the-runs-token")
    sink = WebSink(host="0.0.0.0", port=0)
    assert sink.open() and sink.url.endswith("?token=the-runs-token")
    sink.close()
    monkeypatch.delenv("EARSHOT_WEB_TOKEN")
    sink = WebSink(host="0.0.0.0", port=0)
    sink.open()
    token = sink.view.token
    assert token and len(token) >= 20 and sink.url.endswith(f"?token={token}")
    sink.close()


# -- bounded connections ----------------------------------------------------------------------

def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def test_idle_connections_are_closed() -> None:
    with WebView(port=0, timeout_s=0.5) as view:
        sock = _connect(view.port)  # says nothing
        t0 = time.monotonic()
        assert sock.recv(1024) == b""  # the server hung up
        assert time.monotonic() - t0 < 3
        sock.close()


def test_connections_are_capped_and_threads_stay_bounded() -> None:
    """300 idle sockets: at most max_connections handler threads; the rest get 503 and are closed."""
    before = threading.active_count()
    with WebView(port=0, max_connections=8, timeout_s=1.0) as view:
        socks = []
        for _ in range(300):
            socks.append(_connect(view.port))
        time.sleep(0.3)
        peak = threading.active_count()
        assert peak - before <= 8 + 1, peak - before  # the handlers + the server's own thread
        refused = 0
        for sock in socks:  # each is answered 503 or, once idle for timeout_s, closed
            sock.settimeout(5)
            head = sock.recv(64)
            assert head in (b"", ) or head.startswith(b"HTTP/1.0 503"), head
            refused += head.startswith(b"HTTP/1.0 503")
            sock.close()
        assert refused >= 250 and view.refused == refused, (refused, view.refused)
        # once the idle ones are gone, the view serves again
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and get(view.url + "stats.json")[0] != 200:
            time.sleep(0.1)
        assert get(view.url + "stats.json")[0] == 200


# -- the run base directory ---------------------------------------------------------------------

def test_the_run_base_is_created_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "runs"
    monkeypatch.setenv("EARSHOT_RUN_BASE", str(base))
    assert secure_run_base() == base
    assert stat.S_IMODE(base.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o722])
def test_a_run_base_others_can_write_is_refused(mode: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "runs"
    base.mkdir()
    base.chmod(mode)
    monkeypatch.setenv("EARSHOT_RUN_BASE", str(base))
    with pytest.raises(CannotRun, match=f"{base} is writable by others"):
        secure_run_base()


def test_a_symlinked_run_base_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "runs").symlink_to(tmp_path / "real")
    monkeypatch.setenv("EARSHOT_RUN_BASE", str(tmp_path / "runs"))
    with pytest.raises(CannotRun, match="is a symlink"):
        secure_run_base()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_a_run_base_owned_by_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "runs"
    base.mkdir(mode=0o700)
    os.chown(base, 65534, 65534)
    monkeypatch.setenv("EARSHOT_RUN_BASE", str(base))
    with pytest.raises(CannotRun, match="owned by uid 65534"):
        secure_run_base()


def test_launch_refuses_an_unsafe_run_base_in_one_line(tmp_path: Path) -> None:
    base = tmp_path / "runs"
    base.mkdir()
    base.chmod(0o777)
    proc = subprocess.run([sys.executable, "launch.py", "--duration", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "EARSHOT_RUN_BASE": str(base)})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: run base directory {base} is writable by others (mode 777); "
                                                f"chmod 700 it, remove it or set EARSHOT_RUN_BASE to a directory of your own"]
    assert "starting" not in proc.stdout and list(base.iterdir()) == []
