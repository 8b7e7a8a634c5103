"""The browser sink: the drawn video and the per-node stats table at an http:// address."""

from __future__ import annotations

import logging
from typing import Any

from media.sinks.sink import DrawnFrame, Sink

log = logging.getLogger("earshot.sinks.web")


class WebSink(Sink):
    """A :class:`media.web_view.WebView` (MJPEG): loopback unless ``host`` says otherwise."""

    name = "web"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, title: str = "Earshot") -> None:
        self.host, self.port, self.title = host, port, title
        self.view: Any = None
        self.frames_shown = 0

    def open(self) -> bool:
        from media.web_view import WebView

        self.view = WebView(self.host, self.port, title=self.title).start()
        self.url = self.view.url
        log.info("live view at %s", self.url)
        return True

    def video(self, frame: DrawnFrame) -> None:
        self.view.publish(frame.image, frame.rows, frame.index)
        self.frames_shown += 1

    def close(self) -> list:
        if self.view is not None:
            self.view.close()
        return []

    def stats(self) -> dict[str, float]:
        return {"frames_shown": self.frames_shown, "viewers": self.view.viewers if self.view else 0}
