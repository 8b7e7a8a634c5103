"""Camera: frames from a webcam, a network stream or a video file, each stamped at capture.

Devices and URLs go through OpenCV ``VideoCapture`` (the OS camera drivers and FFmpeg's network
demuxers); files go through PyAV, which gives every frame its presentation time, so playback
is paced to the file's own clock from the graph's epoch and lines up with the audio that the
microphone node reads from the same file.

A camera is a thing that fails: it is unplugged, or a stream drops. The node never dies of
it. It logs a clear error, counts it (``open_failures``, ``disconnects``), and retries with
exponential backoff, while heartbeats keep flowing (``connected`` is 0 or 1). A file is
different: a missing file is a config mistake, caught by ``launch.py check``; a file that
cannot be decoded ends the stream with an error.
"""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from media.av_io import MediaError, fit_size, video_frames
from pipeline.messages import VideoFrame
from pipeline.node import Node, Output
from pipeline.retry import Backoff


def is_device(source: str) -> bool:
    """A device index, a V4L2 device node or a URL (OpenCV); anything else is a file (PyAV)."""
    return source.isdigit() or "://" in source or source.startswith("/dev/video")


class Camera(Node):
    """Frames from a webcam, a network stream or a video file, each stamped at capture."""

    @dataclass
    class Params:
        source: str = "0"  # device index ("0"), /dev/videoN, rtsp://… or http://… URL, or a file path
        width: int = 0  # 0 = native; one side alone keeps the aspect ratio
        height: int = 0
        fps: float = 0.0  # 0 = native; otherwise frames are dropped down to this rate
        realtime: bool = True  # files: pace frames to their timestamps; False = as fast as possible
        loop: bool = False  # files: start over at the end, timestamps keep increasing
        retry_initial_s: float = 0.5  # first wait after a failure; doubles up to retry_max_s
        retry_max_s: float = 10.0
        give_up_after: int = 0  # consecutive failed opens before the stream ends; 0 = never

        def validate(self) -> None:
            if min(self.width, self.height, self.fps) < 0 or not self.source:
                raise ValueError("width/height/fps must be ≥ 0 and source non-empty")
            if not 0 < self.retry_initial_s <= self.retry_max_s:
                raise ValueError("need 0 < retry_initial_s <= retry_max_s")
            if not is_device(self.source) and not Path(self.source).is_file():
                raise ValueError(f"source {self.source!r}: no such file (a device is an index like '0' or a URL)")

    outputs = {"frames": Output(VideoFrame, doc="BGR uint8; capture_ns at grab (files: epoch_ns + pts)")}

    def open(self) -> None:
        p = self.params
        self.is_file = not is_device(p.source)
        self.frames: Iterator[tuple[np.ndarray, float]] | None = None
        self.frame_index = 0
        self.loop_offset_s = 0.0  # file time added per loop, so timestamps never go back
        self.last_pts_s = self.frame_s = 0.0
        self.due_s = 0.0  # next pts to keep when thinning to `fps`
        self.backoff = Backoff(p.retry_initial_s, p.retry_max_s)
        self.counters.update(connected=0, open_failures=0, disconnects=0, frames=0)
        if self.is_file:  # an unreadable file fails here, before the graph starts
            self.frames = video_frames(p.source, p.width, p.height)
            self.counters["connected"] = 1

    def step(self) -> bool:
        if self.frames is None:
            return self._connect()
        try:
            image, pts_s = next(self.frames)
        except StopIteration:
            if not self.is_file:
                self._lost(MediaError(f"camera {self.params.source!r} ended its stream"))
                return True
            if not self.params.loop:
                return False
            self.loop_offset_s += self.last_pts_s + self.frame_s  # the next pass starts one frame later
            self.frames = video_frames(self.params.source, self.params.width, self.params.height)
            return True
        except MediaError as exc:
            if self.is_file:
                self.log.error("%s; ending the stream", exc)
                self.count("errors")
                return False
            self._lost(exc)
            return True
        self.frame_s = pts_s - self.last_pts_s if pts_s > self.last_pts_s else self.frame_s
        self.last_pts_s = pts_s
        pts_s += self.loop_offset_s
        self.backoff.succeeded()  # it works: forget old failures
        if self.params.fps:  # thin to the asked rate (2 ms slack for rounded timestamps)
            if pts_s + 0.002 < self.due_s:
                return True
            self.due_s = max(self.due_s, pts_s - 0.5 / self.params.fps) + 1 / self.params.fps  # no catch-up burst
        if self.is_file:
            capture_ns = self.epoch_ns + round(pts_s * 1e9)
            if self.params.realtime and not self.sleep_until(capture_ns):
                return True  # stopping
        else:
            capture_ns = self.grab_ns
        self.send("frames", VideoFrame(image=image, frame_index=self.frame_index, pts_s=pts_s, capture_ns=capture_ns))
        self.frame_index += 1
        self.count("frames")
        return True

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()  # a generator: closing it releases the file or device
            self.frames = None

    # -- failures and retries --------------------------------------------------------------

    def _connect(self) -> bool:
        """(Re)open the device once the backoff allows; sleep at most 0.1 s so heartbeats flow."""
        if not self.backoff.due():
            self.sleep_until(self.backoff.wait_slice_ns())
            return True
        p = self.params
        try:
            self.frames = self._device_frames()
        except MediaError as exc:
            self.count("open_failures")
            if p.give_up_after and self.backoff.failures + 1 >= p.give_up_after:
                self.log.error("%s; giving up after %d attempts", exc, self.backoff.failures + 1)
                return False
            self._schedule_retry(f"{exc}")
            return True
        self.counters["connected"] = 1
        self.log.info("camera %r open", p.source)
        return True

    def _lost(self, exc: Exception) -> None:
        self.count("disconnects")
        self.close()
        self._schedule_retry(f"camera lost: {exc}")

    def _schedule_retry(self, reason: str) -> None:
        self.counters["connected"] = 0
        self.log.error("%s; retrying in %.1f s", reason, self.backoff.failed())

    def _device_frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """Open a device or URL with OpenCV now; frames are stamped the moment they are grabbed."""
        import cv2

        p = self.params
        if p.source.isdigit():
            cap = cv2.VideoCapture(int(p.source))
        else:  # 5 s timeouts: a dead stream must not hang the node past its heartbeat
            cap = cv2.VideoCapture(p.source, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
        if not cap.isOpened():
            cap.release()
            raise MediaError(f"cannot open camera {p.source!r} (no such device, busy, or unreachable URL)")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a stale driver queue is latency we do not want
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, p.width), (cv2.CAP_PROP_FRAME_HEIGHT, p.height),
                            (cv2.CAP_PROP_FPS, p.fps)):
            if value:
                cap.set(prop, value)
        return self._grab_loop(cap)

    def _grab_loop(self, cap) -> Iterator[tuple[np.ndarray, float]]:
        import cv2

        try:
            start_ns = 0
            while True:
                ok = cap.grab()
                self.grab_ns = time.monotonic_ns()
                ok = ok and (frame := cap.retrieve()[1]) is not None
                if not ok:
                    raise MediaError(f"camera {self.params.source!r} stopped delivering frames")
                start_ns = start_ns or self.grab_ns
                w, h = fit_size(self.params.width, self.params.height, frame.shape[1], frame.shape[0])
                if (w, h) != (frame.shape[1], frame.shape[0]):  # the driver ignored the size we asked
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                yield frame, (self.grab_ns - start_ns) / 1e9
        except cv2.error as exc:
            raise MediaError(f"camera {self.params.source!r}: {exc}") from None
        finally:
            cap.release()
