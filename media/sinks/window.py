"""The window sink: the drawn video in a desktop window (OpenCV HighGUI)."""

from __future__ import annotations

import logging
import os

from media.sinks.sink import DrawnFrame, Sink

log = logging.getLogger("earshot.sinks.window")


class WindowSink(Sink):
    """A window, when there is a display and this OpenCV build has a GUI; else a note at open."""

    name = "window"

    def __init__(self, title: str = "Earshot") -> None:
        self.title = title
        self.frames_shown = 0

    def open(self) -> bool:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
            log.warning("window requested but there is no display; use web_port for a browser view")
            return False
        import cv2

        try:  # opencv-python-headless has no GUI: find out now, not on every frame
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            log.warning("window requested but this OpenCV build has no GUI (headless wheel); "
                        "install opencv-python or use web_port for a browser view")
            return False
        return True

    def video(self, frame: DrawnFrame) -> None:
        import cv2

        cv2.imshow(self.title, frame.image)
        cv2.waitKey(1)
        self.frames_shown += 1

    def close(self) -> list:
        import cv2

        cv2.destroyAllWindows()
        return []

    def stats(self) -> dict[str, float]:
        return {"frames_shown": self.frames_shown}
