"""The browser live view, loaded by a real headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-separated JSON on fds 3/4), so no WebSocket client and no port for DevTools is needed.
The page must show a *changing* frame (the MJPEG ``<img>`` is drawn into a canvas twice and
the pixels differ) and the stats table filled from the renderer's telemetry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.web_view import WebView

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


class DevTools:
    """Just enough of the Chrome DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, user_data_dir: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # The browser reads fd 3 and writes fd 4; a shell puts the pipe ends there (no preexec_fn:
        # the process has threads).
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                 f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-',
             CHROMIUM, *flags],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 20.0) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no DevTools reply to {method} in {timeout_s} s")
            import select

            ready, _, _ = select.select([self._from_chrome], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited: {self.proc.stderr.read()[-2000:]!r}")
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=5.0)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


# Draw the live <img> into a canvas and return a fingerprint of its pixels (+ its size).
SNAPSHOT_JS = """(() => {
  const img = document.getElementById('live');
  if (!img || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!c.width) return null;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i] + 2 * d[i + 1] + 3 * d[i + 2];
  return [c.width, c.height, sum];
})()"""

TABLE_JS = """Array.from(document.querySelectorAll('#stats tbody tr')).map(
  tr => Array.from(tr.cells).map(td => td.textContent))"""


def test_web_view_serves_page_stats_and_frames() -> None:
    """Plain HTTP (no browser): the routes exist and carry what they should."""
    with WebView(port=0) as view:
        view.publish(np.full((48, 64, 3), 200, np.uint8), [{"node": "camera", "compute_ms": 1.25}], frame_index=3)
        page = urllib.request.urlopen(view.url, timeout=5).read().decode()
        assert 'id="stats"' in page and "<td>camera</td>" in page and "/stream.mjpg" in page
        stats = json.loads(urllib.request.urlopen(view.url + "stats.json", timeout=5).read())
        assert stats == {"frame_index": 3, "rows": [{"node": "camera", "compute_ms": 1.25}]}
        jpeg = urllib.request.urlopen(view.url + "frame.jpg", timeout=5).read()
        assert jpeg[:2] == b"\xff\xd8"
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=5) as stream:
            assert "multipart/x-mixed-replace" in stream.headers["Content-Type"]
            head = stream.read(200)
            assert head.startswith(b"--earshotframe\r\nContent-Type: image/jpeg")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(view.url + "etc/passwd", timeout=5)
    assert view.url.startswith("http://127.0.0.1:")


@pytest.mark.skipif(CHROMIUM is None, reason="LOUD SKIP: chromium is not installed (apt-get install chromium)")
def test_headless_chromium_sees_changing_frames_and_stats_table(tmp_path: Path) -> None:
    from nodes.renderer import Renderer
    from pipeline.harness import Harness
    from pipeline.messages import VideoFrame

    with Harness(Renderer, {"web_port": 0}) as h:
        h.node.telemetry = {"camera": {"compute_ms": {"p50": 1.5}, "inputs": {}},
                            "separator": {"compute_ms": {"p50": 8.5},
                                          "inputs": {"audio": {"latency_ms": {"p50": 22.0}, "dropped": 3}}}}
        stop = threading.Event()

        def feed() -> None:  # a moving bright bar, 20 frames a second, while the browser watches
            i = 0
            while not stop.is_set():
                image = np.zeros((120, 160, 3), np.uint8)
                image[:, (i * 8) % 160:(i * 8) % 160 + 16] = 255
                h.feed("video", VideoFrame(image=image, frame_index=i, capture_ns=time.monotonic_ns()))
                i += 1
                time.sleep(0.05)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        browser = DevTools(tmp_path / "chromium-profile")
        try:
            browser.open(h.node.sinks["web"].url)
            deadline = time.monotonic() + 20
            first = None
            while time.monotonic() < deadline and first is None:
                first = browser.evaluate(SNAPSHOT_JS)
                time.sleep(0.1)
            assert first is not None, "the live image never showed a frame"
            assert first[:2] == [160, 120]
            changed = None
            while time.monotonic() < deadline:
                time.sleep(0.3)
                changed = browser.evaluate(SNAPSHOT_JS)
                if changed != first:
                    break
            assert changed != first, "the live image did not change"
            rows: list[list[str]] = []
            while time.monotonic() < deadline:
                rows = browser.evaluate(TABLE_JS)
                if rows:
                    break
                time.sleep(0.2)
            assert rows == [["camera", "1.5", "-", "0", "0"], ["separator", "8.5", "22", "3", "0"]], rows
            frame_text = browser.evaluate("document.getElementById('frame').textContent")
            assert int(frame_text) > 0
        finally:
            stop.set()
            feeder.join()
            browser.close()


# -- choosing whose voice plays (issue 17) ------------------------------------------------------

FACES = {3: [10.0, 10.0, 50.0, 60.0], 7: [80.0, 10.0, 150.0, 100.0], 9: [90.0, 20.0, 110.0, 40.0]}  # 9 inside 7


def choosing_sink(**kwargs: Any) -> tuple[Any, Any]:
    from media.sinks.sink import DrawnFrame, VoiceChoice
    from media.sinks.web import WebSink

    choice = VoiceChoice("the loudest voice")
    sink = WebSink(port=0, choice=choice, **kwargs)
    assert sink.open()
    sink.video(DrawnFrame(np.zeros((120, 160, 3), np.uint8), 0.0, 1, faces=dict(FACES)))
    return sink, choice


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            method: str | None = None) -> tuple[int, Any]:
    """(status, parsed JSON or raw bytes) of one request; a 4xx/5xx is an answer, not an exception."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            code, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw


def click(url: str, x: float, y: float, add: bool = False) -> tuple[int, Any]:
    return request(url, json.dumps({"x": x, "y": y, "add": add}).encode(), {"Content-Type": "application/json"})


def test_a_click_on_a_face_chooses_its_voice_and_a_click_beside_resets() -> None:
    sink, choice = choosing_sink()
    url = sink.url + "choice"
    try:
        assert request(url) == (200, {"tracks": [], "label": "the loudest voice (default)", "size": [160, 120],
                                      "boxes": []})
        code, state = click(url, 30, 30)  # inside face 3
        assert code == 200 and state["tracks"] == [3] and state["label"] == "face 3"
        assert state["boxes"] == [{"id": 3, "box": FACES[3]}] and choice.tracks == {3}
        assert click(url, 30, 30)[1]["tracks"] == []  # the same face again: the default
        assert click(url, 120, 80)[1]["tracks"] == [7]
        assert click(url, 100, 30)[1]["tracks"] == [9]  # overlapping boxes: the smaller one (in front)
        assert click(url, 30, 30, add=True)[1]["tracks"] == [3, 9]  # shift-click adds
        code, state = click(url, 120, 80, add=True)
        assert state["tracks"] == [3, 7, 9] and state["label"] == "face 3 + face 7 + face 9"
        assert click(url, 100, 30, add=True)[1]["tracks"] == [3, 7]  # shift-click on a chosen face takes it out
        assert click(url, 120, 80)[1]["tracks"] == [7]  # a plain click: that face alone
        assert click(url, 70, 110)[1]["tracks"] == []  # beside every face: the default
        assert click(url, 120, 80)[1]["tracks"] == [7]
        assert click(url, -5, 1e5, add=True)[1]["tracks"] == []  # off the image: beside every face
        assert request(url)[1]["label"] == "the loudest voice (default)"
        assert choice.stats() == {"faces": 0, "track": -1, "changes": 11}
        assert sink.stats()["clicks"] == 11 and sink.stats()["bad_requests"] == 0
        # the page sends clicks and says what plays
        page = urllib.request.urlopen(sink.url, timeout=10).read().decode()
        assert 'id="voice"' in page and 'fetch("/choice" + query' in page and 'id="stats"' in page
    finally:
        sink.close()


def test_a_face_that_moved_is_found_where_the_newest_frame_has_it() -> None:
    from media.sinks.sink import DrawnFrame

    sink, choice = choosing_sink()
    try:
        sink.video(DrawnFrame(np.zeros((120, 160, 3), np.uint8), 0.04, 2, faces={3: [60.0, 60.0, 100.0, 110.0]}))
        assert click(sink.url + "choice", 30, 30)[1]["tracks"] == []  # where face 3 was
        assert click(sink.url + "choice", 80, 80)[1]["tracks"] == [3]
        sink.video(DrawnFrame(np.zeros((120, 160, 3), np.uint8), 0.08, 3))  # no face drawn (stale/none)
        assert click(sink.url + "choice", 80, 80)[1]["tracks"] == []
    finally:
        sink.close()


def test_malformed_choice_requests_get_a_4xx_and_the_view_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    import http.client
    import logging
    import socket

    sink, choice = choosing_sink()
    url, port = sink.url + "choice", sink.view.port
    json_type = {"Content-Type": "application/json"}
    bad = [
        (b"not json", json_type, 400),
        (b"[1, 2]", json_type, 400),
        (b'{"x": 30}', json_type, 400),
        (b'{"x": "30", "y": 30}', json_type, 400),
        (b'{"x": true, "y": 30}', json_type, 400),
        (b'{"x": NaN, "y": 30}', json_type, 400),
        (b'{"x": 1e400, "y": 30}', json_type, 400),  # infinity
        (b'{"x": 30, "y": 30, "add": "yes"}', json_type, 400),
        (b"\xff\xfe{", json_type, 400),
        (b"[" * 900 + b"]" * 100, json_type, 400),  # deep nesting within the size limit
        (b'{"x": 30, "y": 30}', {"Content-Type": "text/plain"}, 415),  # what a form on another site can send
        (b'{"x": 30, "y": 30}', {**json_type, "Origin": "http://evil.example"}, 403),
        (b'{"x": 30, "y": 30, "pad": "' + b"x" * 5000 + b'"}', json_type, 413),
        (b"", json_type, 400),
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="earshot.sinks.web"):
            for body, headers, want in bad:
                code, answer = request(url, body, headers)
                assert code == want, (body[:40], code, answer)
                assert "error" in answer
            assert request(sink.url + "elsewhere", b"{}", json_type)[0] == 404
            # no Content-Length, and one that promises far more than comes: refused, not waited for
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.putrequest("POST", "/choice")
            conn.putheader("Content-Type", "application/json")
            conn.endheaders()
            assert conn.getresponse().status == 411
            conn.close()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"POST /choice HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 99999999999\r\n\r\n{}")
                assert raw.recv(64).startswith(b"HTTP/1.0 413")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # not HTTP at all
                raw.sendall(b"\x00\x01garbage\r\n\r\n")
                reply = b"".join(iter(lambda: raw.recv(4096), b""))  # http.server answers it as HTTP/0.9
                assert b"Error code: 400" in reply
        assert choice.tracks == frozenset() and choice.changes == 0  # nothing bad changed anything
        assert sink.view.bad_requests == len(bad) + 3
        lines = [r.getMessage() for r in caplog.records if r.name == "earshot.sinks.web"]
        # one line, not a traceback; a burst is summarised (at most one line a second)
        assert lines and lines[0].startswith("web view: refused a voice choice from 127.0.0.1: 400 not JSON")
        assert len(lines) <= 3 and all("Traceback" not in line for line in lines)
        # still serving: a good click works, and so do the view's own routes
        assert click(url, 30, 30)[1]["tracks"] == [3]
        assert request(sink.url + "stats.json")[0] == 200
    finally:
        sink.close()


def test_a_remote_view_wants_its_token_for_a_choice_too() -> None:
    sink, choice = choosing_sink(host="0.0.0.0", allow_remote=True, token="s3cret-token")
    base = f"http://127.0.0.1:{sink.view.port}/choice"
    try:
        assert click(base, 30, 30)[0] == 403
        assert click(base + "?token=wrong", 30, 30)[0] == 403
        assert request(base)[0] == 403  # reading the choice too
        assert choice.tracks == frozenset()
        assert click(base + "?token=s3cret-token", 30, 30)[1]["tracks"] == [3]
        code, state = request(base, headers={"Authorization": "Bearer s3cret-token"})
        assert code == 200 and state["tracks"] == [3]
        page = request(f"http://127.0.0.1:{sink.view.port}/?token=s3cret-token")[1].decode()
        assert 'const query = "?token=s3cret-token";' in page  # the page's clicks carry it
    finally:
        sink.close()


def test_without_an_audio_output_there_is_no_choice() -> None:
    from media.sinks.web import WebSink

    sink = WebSink(port=0)
    assert sink.open()
    try:
        assert click(sink.url + "choice", 30, 30)[0] == 404
        assert request(sink.url + "choice")[0] == 404
        assert 'id="voice"' not in urllib.request.urlopen(sink.url, timeout=10).read().decode()
        assert "clicks" not in sink.stats()
    finally:
        sink.close()


@pytest.mark.skipif(CHROMIUM is None, reason="LOUD SKIP: chromium is not installed (apt-get install chromium)")
def test_headless_chromium_clicks_a_face_and_the_view_says_whose_voice_plays(tmp_path: Path) -> None:
    """A real mouse click (DevTools Input events) on the scaled <img>: the page maps it to image
    pixels, posts it, and shows the choice (line + highlighted box); shift-click adds a face."""
    from media.sinks.sink import DrawnFrame

    sink, choice = choosing_sink()
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            sink.video(DrawnFrame(np.full((120, 160, 3), 40 + i % 2, np.uint8), i / 20, i, faces=dict(FACES)))
            i += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    browser = DevTools(tmp_path / "chromium-profile")
    try:
        browser.open(sink.url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not browser.evaluate(
                "(() => { const i = document.getElementById('live'); return !!(i && i.naturalWidth); })()"):
            time.sleep(0.1)
        # show the image at twice its size, so the page must scale the click back to image pixels
        browser.evaluate("document.getElementById('live').style.width = '320px'")

        def click_at(x: float, y: float, shift: bool = False) -> None:
            left, top = browser.evaluate("(() => { const i = document.getElementById('live'); "
                                         "const r = i.getBoundingClientRect(); return [r.left + i.clientLeft, "
                                         "r.top + i.clientTop]; })()")
            where = {"x": left + 2 * x, "y": top + 2 * y, "button": "left", "clickCount": 1,
                     "modifiers": 8 if shift else 0}
            browser.call("Input.dispatchMouseEvent", {"type": "mousePressed", **where})
            browser.call("Input.dispatchMouseEvent", {"type": "mouseReleased", **where})

        def line_says(text: str) -> str:
            said = ""
            while time.monotonic() < deadline:
                said = browser.evaluate("document.getElementById('voice').textContent")
                if text in said:
                    break
                time.sleep(0.1)
            return said

        click_at(120, 80)  # face 7
        assert "Playing: face 7" in line_says("face 7")
        assert choice.tracks == {7}
        boxes = browser.evaluate("Array.from(document.querySelectorAll('.chosen')).map(d => d.style.left)")
        assert boxes == ["50%"]  # face 7's box starts at x = 80 of 160
        click_at(30, 30, shift=True)  # + face 3
        assert "face 3 + face 7" in line_says("face 3 + face 7") and choice.tracks == {3, 7}
        click_at(70, 110)  # beside the faces
        assert "the loudest voice (default)" in line_says("(default)") and choice.tracks == frozenset()
    finally:
        stop.set()
        feeder.join()
        browser.close()
        sink.close()
