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
