"""The browser sink: the drawn video and the per-node stats table at an http:// address."""

from __future__ import annotations

import logging
import os
from typing import Any

from media.sinks.sink import DrawnFrame, Sink

log = logging.getLogger("earshot.sinks.web")

#: set by the supervisor for every node (pipeline/supervisor.py): the run's token, so a restarted
#: renderer keeps the address its viewers have, and the graph's settings.allow_remote
TOKEN_ENV, ALLOW_REMOTE_ENV = "EARSHOT_WEB_TOKEN", "EARSHOT_ALLOW_REMOTE"


class WebSink(Sink):
    """A :class:`media.web_view.WebView` (MJPEG): loopback unless ``host`` says otherwise, and then
    only if the graph allows remote viewers (``allow_remote``; None: as the run says) and with a
    token (``token``; None: the run's, else a fresh one). The log line and :attr:`url` carry it."""

    name = "web"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, title: str = "Earshot",
                 allow_remote: bool | None = None, token: str | None = None) -> None:
        self.host, self.port, self.title = host, port, title
        self.allow_remote = os.environ.get(ALLOW_REMOTE_ENV) == "1" if allow_remote is None else allow_remote
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.view: Any = None
        self.frames_shown = 0

    def open(self) -> bool:
        from media.web_view import WebView

        self.view = WebView(self.host, self.port, title=self.title, allow_remote=self.allow_remote,
                            token=self.token).start()
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
        return {"frames_shown": self.frames_shown, "viewers": self.view.viewers if self.view else 0,
                "connections_refused": self.view.refused if self.view else 0}
