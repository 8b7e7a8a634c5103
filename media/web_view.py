"""A live view in the browser, for boxes without a display (edge devices, servers).

Why MJPEG over plain HTTP: every browser shows ``multipart/x-mixed-replace`` JPEGs in an
``<img>`` with no script, no WebSocket library and no codec; at 640×480 a JPEG is ~30–60 kB,
fine on a LAN. The stdlib ``http.server`` in a daemon thread is enough for a handful of
viewers.

Routes: ``/`` (page: live image + stats table refreshed twice a second), ``/stream.mjpg``,
``/frame.jpg`` (the latest frame once), ``/stats.json``.

Cost stays off the renderer's path: :meth:`WebView.publish` only stores a reference to
the frame; JPEG encoding happens in the server's threads (OpenCV releases the GIL), once
per published frame however many viewers there are, and not at all when nobody watches.
It binds to loopback by default: the stream shows a camera, so exposing it on a network
must be a deliberate choice, twice: ``allow_remote`` (the graph's ``settings.allow_remote``),
and then every request must carry the view's token (``?token=…``, or an ``X-Earshot-Token`` or
``Authorization: Bearer`` header), compared in constant time. The page puts the token it was
opened with into its own stream and stats URLs. Loopback needs no token: anyone who can reach
127.0.0.1 is already a local user.

Resources are bounded for any caller: at most ``max_connections`` at once (one thread each;
the next is answered 503 and closed), and a connection idle for ``timeout_s`` (no request, or
a viewer that stopped reading) is closed.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

log = logging.getLogger("earshot.web_view")

BOUNDARY = "earshotframe"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ background:#111; color:#ddd; font-family: sans-serif; margin: 1em; }}
 #live {{ max-width: 100%; border: 1px solid #333; }}
 table {{ border-collapse: collapse; margin-top: .8em; font-size: 14px; }}
 td, th {{ border: 1px solid #444; padding: 2px 8px; text-align: right; }}
 td:first-child, th:first-child {{ text-align: left; }}
</style></head>
<body>
<h3>{title} — frame <span id="frame">{frame}</span></h3>
<img id="live" src="/stream.mjpg{query}" alt="live view">
<table id="stats"><thead><tr><th>node</th><th>compute p50 ms</th><th>age p50 ms</th>
<th>dropped</th><th>errors</th></tr></thead><tbody>{rows}</tbody></table>
<script>
function cell(v) {{ return v === null || v === undefined ? "-" : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(1) : v); }}
async function refresh() {{
  try {{
    const s = await (await fetch("/stats.json{query}", {{cache: "no-store"}})).json();
    document.getElementById("frame").textContent = s.frame_index;
    document.querySelector("#stats tbody").innerHTML = s.rows.map(r =>
      "<tr><td>" + r.node + "</td><td>" + cell(r.compute_ms) + "</td><td>" + cell(r.age_ms) +
      "</td><td>" + cell(r.dropped) + "</td><td>" + cell(r.errors) + "</td></tr>").join("");
  }} catch (e) {{ /* the renderer may be restarting; try again */ }}
}}
setInterval(refresh, 500); refresh();
</script>
</body></html>
"""


def _row_html(row: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.1f}" if isinstance(v, float) else html.escape(str(v))
    return "<tr>" + "".join(f"<td>{cell(row.get(k))}</td>"
                            for k in ("node", "compute_ms", "age_ms", "dropped", "errors")) + "</tr>"


def is_loopback(host: str) -> bool:  # (pipeline/graph.py has the same test: media may not import pipeline)
    host = host.strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteNotAllowed(ValueError):
    """A non-loopback address without ``allow_remote``."""


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most ``max_connections`` handler threads: one more is told
    503 and closed at once, so a flood of idle sockets cannot grow the renderer's threads."""

    daemon_threads = True
    block_on_close = False  # close() must not wait on a viewer's stream
    request_queue_size = 64  # a burst is accepted and answered 503, not left in the kernel's queue

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(0.5)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class WebView:
    """``view = WebView(port=8080).start(); view.publish(bgr, rows, frame_index); view.close()``.

    A non-loopback ``host`` needs ``allow_remote=True`` and is then guarded by ``token``
    (a fresh random one if none is given; :attr:`url` carries it)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, jpeg_quality: int = 80,
                 max_fps: float = 30.0, title: str = "Earshot", allow_remote: bool = False,
                 token: str | None = None, max_connections: int = 16, timeout_s: float = 10.0) -> None:
        self.host, self.port = host, port
        self.jpeg_quality = jpeg_quality
        self.max_fps = max_fps
        self.title = title
        self.remote = not is_loopback(host)
        if self.remote and not allow_remote:
            raise RemoteNotAllowed(f"web view on {host!r}: not a loopback address, and remote viewers are not "
                                   "allowed (settings.allow_remote: true allows them, with a token)")
        #: what every request must carry; None on loopback
        self.token = (token or secrets.token_urlsafe(18)) if self.remote else None
        if max_connections < 1 or timeout_s <= 0:
            raise ValueError("max_connections must be ≥ 1 and timeout_s > 0")
        self.max_connections, self.timeout_s = max_connections, timeout_s
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._version = 0
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._stats: dict[str, Any] = {"frame_index": 0, "rows": []}
        self._closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.viewers = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def refused(self) -> int:
        """Connections answered 503 because ``max_connections`` were open."""
        return self._server.refused if self._server is not None else 0

    def start(self) -> WebView:
        if self.remote:
            log.warning("web view listens on %s: anyone on that network who has the token can watch the camera",
                        self.host)
        self._server = _BoundedServer((self.host, self.port), _make_handler(self), self.max_connections)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web-view", daemon=True)
        self._thread.start()
        return self

    def publish(self, bgr: np.ndarray, rows: list[dict[str, Any]] | None = None, frame_index: int = 0) -> None:
        """Offer a new frame (not copied: do not modify it afterwards) and the stats rows."""
        with self._cond:
            self._image = bgr
            self._version += 1
            self._stats = {"frame_index": int(frame_index), "rows": list(rows or [])}
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebView:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- used by the handler threads ----------------------------------------------------

    def stats_json(self) -> bytes:
        with self._cond:
            return json.dumps(self._stats).encode()

    def page(self) -> bytes:
        with self._cond:
            stats = self._stats
        rows = "".join(_row_html(r) for r in stats["rows"])
        query = html.escape(f"?token={self.token}") if self.token else ""
        return PAGE.format(title=html.escape(self.title), frame=stats["frame_index"], rows=rows,
                           query=query).encode()

    def authorized(self, path: str, headers: Any) -> bool:
        """Loopback: always. Remote: the request carries the token (query or header)."""
        if self.token is None:
            return True
        offered = parse_qs(urlsplit(path).query).get("token", [""])[-1] or headers.get("X-Earshot-Token", "")
        bearer = headers.get("Authorization", "")
        if not offered and bearer.lower().startswith("bearer "):
            offered = bearer[7:].strip()
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def wait_jpeg(self, after_version: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The JPEG of the newest frame newer than ``after_version``; None on timeout/close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closing or self._version > after_version, timeout_s):
                return None
            if self._closing:
                return None
            version, image = self._version, self._image
            if self._jpeg[0] == version:
                return self._jpeg
        import cv2  # encode outside the lock: cv2 releases the GIL, the renderer keeps going

        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return None
        with self._cond:
            if self._jpeg[0] < version:
                self._jpeg = (version, buf.tobytes())
            return self._jpeg

    @property
    def closing(self) -> bool:
        return self._closing


def _make_handler(view: WebView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "EarshotWebView/1"
        timeout = view.timeout_s  # socket timeout: an idle or stalled connection is closed

        def log_message(self, fmt: str, *args: Any) -> None:  # keep stderr quiet
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if not view.authorized(self.path, self.headers):
                self._send(403, "text/plain", b"this view needs its token: ?token=...")
            elif path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", view.page())
            elif path == "/stats.json":
                self._send(200, "application/json", view.stats_json())
            elif path == "/frame.jpg":
                got = view.wait_jpeg(0, timeout_s=2.0)
                if got is None:
                    self._send(503, "text/plain", b"no frame yet")
                else:
                    self._send(200, "image/jpeg", got[1])
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            view.viewers += 1
            version, min_gap_s, last_s = 0, 1.0 / max(view.max_fps, 0.1), 0.0
            try:
                while not view.closing:
                    got = view.wait_jpeg(version, timeout_s=1.0)
                    if got is None:
                        continue
                    version, jpeg = got
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()
                    # pace to max_fps: a viewer never makes the server encode faster than that
                    wait = min_gap_s - (time.monotonic() - last_s)
                    if wait > 0:
                        time.sleep(wait)
                    last_s = time.monotonic()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the viewer went away
            finally:
                view.viewers -= 1

    return Handler
