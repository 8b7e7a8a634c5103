"""The browser sink: the drawn video and the per-node stats table at an http:// address, and, when
the renderer has a voice to choose (speakers, virtual microphone), the choice of it by a click.

Clicking a face box in the view plays that face's voice; clicking it again, or beside every face,
goes back to the configured default; shift-click adds a face (its voice is summed with the others)
or takes it out. The page sends the click to ``/choice`` on the same server, with the same rules as
every other route (loopback, or the token), and shows what plays: a line under the image and a box
around each chosen face. The choice is a shared :class:`media.sinks.sink.VoiceChoice`; the audio
sinks apply it at their next block.

``POST /choice`` takes ``{"x": …, "y": …, "add": false}`` (JSON, at most ``MAX_BODY_BYTES``): a
point in the pixels of the displayed image (its natural size, not the size the browser scaled it
to). ``GET /choice`` and the POST's answer: ``{"tracks": [3], "label": "face 3", "size": [w, h],
"boxes": [{"id": 3, "box": [x0, y0, x1, y1]}]}`` (the chosen faces' boxes in the newest frame).
A bad request gets a 4xx and one log line (at most one a second, with how many were not logged).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from media.sinks.sink import DrawnFrame, Sink, VoiceChoice
from media.web_view import WebView

log = logging.getLogger("earshot.sinks.web")

#: set by the supervisor for every node (pipeline/supervisor.py): the run's token, so a restarted
#: renderer keeps the address its viewers have, and the graph's settings.allow_remote
TOKEN_ENV, ALLOW_REMOTE_ENV = "EARSHOT_WEB_TOKEN", "EARSHOT_ALLOW_REMOTE"

#: a click is ~40 bytes of JSON; anything much longer is not one
MAX_BODY_BYTES = 1024
#: coordinates beyond this are not a click on any image
MAX_COORD = 1e6
#: of a refused request's body, this much is read and dropped before the answer: a socket closed
#: with unread data is reset, and the client would lose the answer (the rest is not waited for)
DRAIN_BYTES = 64 * 1024


class WebSink(Sink):
    """A :class:`media.web_view.WebView` (MJPEG): loopback unless ``host`` says otherwise, and then
    only if the graph allows remote viewers (``allow_remote``; None: as the run says) and with a
    token (``token``; None: the run's, else a fresh one). The log line and :attr:`url` carry it.

    With a ``choice``, a click on a face chooses whose voice plays (see the module). The faces it
    picks from are the ones drawn on the newest frame (:attr:`DrawnFrame.faces`): already in the
    pixels of the image the browser shows, and only the fresh ones, so a click picks what the
    person sees boxed, never a face whose box is no longer drawn."""

    name = "web"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, title: str = "Earshot",
                 allow_remote: bool | None = None, token: str | None = None,
                 choice: VoiceChoice | None = None) -> None:
        self.host, self.port, self.title = host, port, title
        self.allow_remote = os.environ.get(ALLOW_REMOTE_ENV) == "1" if allow_remote is None else allow_remote
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.choice = choice
        self.view: Any = None
        self.frames_shown = 0
        self.clicks = 0
        # (width, height, {track id: box}) of the newest frame, replaced whole by the renderer's
        # thread and read by the server's: a reader never sees a size from one frame with boxes of another
        self._shown: tuple[int, int, dict[int, list[float]]] = (0, 0, {})

    def open(self) -> bool:
        self.view = ChoosingWebView(self.host, self.port, title=self.title, allow_remote=self.allow_remote,
                                    token=self.token, on_click=self.click if self.choice else None,
                                    choice_state=self.choice_state if self.choice else None).start()
        self.url = self.view.url
        log.info("live view at %s%s", self.url, " (click a face to choose whose voice plays)" if self.choice else "")
        return True

    def video(self, frame: DrawnFrame) -> None:
        self._shown = (frame.image.shape[1], frame.image.shape[0], dict(frame.faces))
        self.view.publish(frame.image, frame.rows, frame.index)
        self.frames_shown += 1

    def face_at(self, x: float, y: float) -> int | None:
        """The track of the face box under (x, y) in the newest frame; of overlapping boxes, the
        smallest (the one in front, usually); None: no face there."""
        under = [(max(x1 - x0, 0.0) * max(y1 - y0, 0.0), track) for track, (x0, y0, x1, y1) in self._shown[2].items()
                 if x0 <= x <= x1 and y0 <= y <= y1]
        return min(under)[1] if under else None

    def click(self, x: float, y: float, add: bool = False) -> dict[str, Any]:
        """A click at (x, y), image pixels: the face under it is chosen (:meth:`VoiceChoice.clicked`)."""
        track = self.face_at(x, y)
        self.choice.clicked(track, add)
        self.clicks += 1
        log.info("voice choice: %s (%sclick at %.0f, %.0f on %s)", self.choice.label(), "shift-" if add else "",
                 x, y, "nobody" if track is None else f"face {track}")
        return self.choice_state()

    def choice_state(self) -> dict[str, Any]:
        width, height, faces = self._shown
        tracks = sorted(self.choice.tracks)
        return {"tracks": tracks, "label": self.choice.label(), "size": [width, height],
                "boxes": [{"id": i, "box": [round(v, 1) for v in faces[i]]} for i in tracks if i in faces]}

    def close(self) -> list:
        if self.view is not None:
            self.view.close()
        return []

    def stats(self) -> dict[str, float]:
        view = self.view
        out = {"frames_shown": self.frames_shown, "viewers": view.viewers if view else 0,
               "connections_refused": view.refused if view else 0}
        if self.choice is not None:
            out.update(clicks=self.clicks, bad_requests=view.bad_requests if view else 0)
        return out


class BadRequest(ValueError):
    """A request to ``/choice`` that is not a click: answered with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def parse_click(body: bytes) -> tuple[float, float, bool]:
    """``{"x": number, "y": number, "add": bool?}`` → (x, y, add); anything else: :class:`BadRequest`."""
    def no_constant(name: str) -> None:  # json would take NaN and Infinity
        raise ValueError(f"{name} is not a number here")

    try:
        click = json.loads(body.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(400, f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(click, dict):
        raise BadRequest(400, "not a JSON object")
    x, y, add = click.get("x"), click.get("y"), click.get("add", False)
    for name, v in (("x", x), ("y", y)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -MAX_COORD <= v <= MAX_COORD:
            raise BadRequest(400, f"{name} must be a number of image pixels")
    if not isinstance(add, bool):
        raise BadRequest(400, "add must be true or false")
    return float(x), float(y), add


class ChoosingWebView(WebView):
    """The web view with the ``/choice`` route and, on its page, the click handler and the line
    that says what plays. Without ``on_click`` it is the plain view (``/choice`` is not found)."""

    def __init__(self, *args: Any, on_click: Callable[[float, float, bool], dict[str, Any]] | None = None,
                 choice_state: Callable[[], dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_click, self.choice_state = on_click, choice_state
        self.bad_requests = 0
        self._log_lock, self._last_log_s, self._unlogged = threading.Lock(), -math.inf, 0

    def start(self) -> ChoosingWebView:
        super().start()
        # media.web_view builds its handler inside start(); the /choice route is a subclass of it, in
        # place before start() returns (a request in that instant gets the plain view's 404/501, and
        # the page's next click or poll is served)
        self._server.RequestHandlerClass = _with_choice(self._server.RequestHandlerClass, self)
        return self

    def page(self) -> bytes:
        page = super().page()
        if self.on_click is None:
            return page
        query = f"?token={self.token}" if self.token else ""
        script = CHOICE_JS.replace("QUERY", json.dumps(query).replace("</", "<\\/"))
        return page.replace(b"</body>", script.encode() + b"</body>", 1)

    def refuse(self, client: str, code: int, reason: str) -> None:
        """Count a bad request and say so, one line, at most one a second (a flood cannot fill the log)."""
        with self._log_lock:
            self.bad_requests += 1
            now = time.monotonic()
            if now - self._last_log_s < 1.0:
                self._unlogged += 1
                return
            unlogged, self._unlogged, self._last_log_s = self._unlogged, 0, now
        log.warning("web view: refused a voice choice from %s: %d %s%s", client, code, reason,
                    f" ({unlogged} more refused since the last line)" if unlogged else "")


def _with_choice(base: type, view: ChoosingWebView) -> type:
    class Handler(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if (self.path.split("?", 1)[0] == "/choice" and view.choice_state is not None
                    and view.authorized(self.path, self.headers)):
                self._send(200, "application/json", json.dumps(view.choice_state()).encode())
            else:
                super().do_GET()  # everything else, auth included, as the plain view does it

        def do_POST(self) -> None:  # noqa: N802
            try:
                code, body = 200, json.dumps(view.on_click(*self._click())).encode()
            except BadRequest as exc:
                self.close_connection = True  # a body we did not read must not be taken for a request
                view.refuse(self.address_string(), exc.code, str(exc))
                self._drain()
                code, body = exc.code, json.dumps({"error": str(exc)}).encode()
            except Exception:  # noqa: BLE001 - one request's failure is not the server's
                log.exception("web view: a voice choice failed")
                self.close_connection = True
                code, body = 500, b'{"error": "internal error"}'
            self._send(code, "application/json", body)

        def _click(self) -> tuple[float, float, bool]:
            if not view.authorized(self.path, self.headers):
                raise BadRequest(403, "no token")
            if self.path.split("?", 1)[0] != "/choice" or view.on_click is None:
                raise BadRequest(404, f"no POST route {self.path.split('?', 1)[0][:60]!r}")
            # a page from another site can post to 127.0.0.1 from the user's own browser; it cannot
            # send this content type without a CORS preflight (which this server does not answer),
            # and a browser always says where such a request comes from
            origin, host = self.headers.get("Origin"), self.headers.get("Host", "")
            if origin is not None and origin.split("://", 1)[-1] != host:
                raise BadRequest(403, f"cross-origin request from {origin[:80]!r}")
            if self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() != "application/json":
                raise BadRequest(415, "the body must be application/json")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise BadRequest(411, "no valid Content-Length") from None
            if length <= 0:
                raise BadRequest(400, "no body")
            if length > MAX_BODY_BYTES:
                raise BadRequest(413, f"body of {length} bytes (a click is at most {MAX_BODY_BYTES})")
            try:
                self.body_read = True
                body = self.rfile.read(length)  # the socket's timeout bounds a sender that stalls
            except OSError as exc:
                raise BadRequest(408, f"body not received: {exc}") from None
            if len(body) != length:
                raise BadRequest(400, f"body of {len(body)} bytes, {length} announced")
            return parse_click(body)

        def _drain(self) -> None:
            try:
                left = min(max(int(self.headers.get("Content-Length", "0")), 0), DRAIN_BYTES)
            except ValueError:
                return
            if getattr(self, "body_read", False):
                return
            try:
                self.connection.settimeout(0.5)
                while left > 0:
                    chunk = self.rfile.read1(min(left, 8192))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass

    return Handler


# Added to the page when a voice can be chosen. The image is wrapped in a box that holds the
# highlight rectangles (placed in % of the image, so they follow the browser's scaling).
CHOICE_JS = """<p id="voice" style="margin:.4em 0">Playing: …</p>
<script>
(() => {
  const query = QUERY;
  const img = document.getElementById("live"), line = document.getElementById("voice");
  const wrap = document.createElement("div");
  wrap.style.cssText = "position:relative; display:inline-block; max-width:100%; line-height:0";
  img.parentNode.insertBefore(wrap, img); wrap.appendChild(img); wrap.after(line);
  img.style.cursor = "pointer"; img.title = "click a face: its voice plays; shift-click: add a face";
  function show(c) {
    line.textContent = "Playing: " + c.label +
      (c.tracks.length ? " (click it again, or beside the faces, for the default)" : "");
    wrap.querySelectorAll(".chosen").forEach(e => e.remove());
    const [w, h] = c.size;
    if (!w || !h) return;
    for (const f of c.boxes) {
      const [x0, y0, x1, y1] = f.box, d = document.createElement("div");
      d.className = "chosen";
      d.style.cssText = "position:absolute; pointer-events:none; border:3px solid #3f3; box-sizing:border-box;" +
        `left:${100 * x0 / w}%; top:${100 * y0 / h}%; width:${100 * (x1 - x0) / w}%; height:${100 * (y1 - y0) / h}%`;
      wrap.appendChild(d);
    }
  }
  async function choice(init) {
    try {
      const r = await fetch("/choice" + query, init);
      if (r.ok) show(await r.json());
    } catch (e) { /* the renderer may be restarting; the next poll tries again */ }
  }
  img.addEventListener("mousedown", ev => { if (ev.shiftKey) ev.preventDefault(); });  // no text selection
  img.addEventListener("click", ev => {
    if (!img.naturalWidth || !img.clientWidth) return;
    const x = ev.offsetX * img.naturalWidth / img.clientWidth, y = ev.offsetY * img.naturalHeight / img.clientHeight;
    choice({method: "POST", headers: {"Content-Type": "application/json"}, cache: "no-store",
            body: JSON.stringify({x: x, y: y, add: ev.shiftKey})});
  });
  setInterval(() => choice({cache: "no-store"}), 1000); choice({cache: "no-store"});
})();
</script>
"""
