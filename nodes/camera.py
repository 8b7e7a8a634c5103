"""Camera: frames from a webcam, a network stream or a video file, each stamped at capture.

Devices and URLs go through OpenCV ``VideoCapture`` (the OS camera drivers and FFmpeg's network
demuxers); files go through PyAV, which gives every frame its presentation time, so playback
is paced to the file's own clock from the graph's epoch and lines up with the audio that the
microphone node reads from the same file.

A camera is a thing that fails: it is unplugged, or a stream drops. The node never dies of
it: ``pipeline.retry.Reconnecting`` logs and counts each failure and reopens the camera with
backoff while heartbeats flow. A file is different: a missing file is a config mistake, caught
by ``launch.py check``; a file that cannot be opened, has no video or whose first frame does not
decode is one too, found in ``open()``: a :class:`ConfigError` (one line, the node is not
restarted, the graph stops with exit code 2). A file that breaks later ends the stream with an error.

A camera process that crashed (or was killed) and is restarted goes on, not over: a file goes on at
``resume_at_ns()`` (where the graph's clock is now, or in lossless pace right after the last frame
sent), found by a seek, so a restart costs one GOP of decoding however long the run has been; frame
numbers go on counting, and a device's frame times go on from its first grab (``carried``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media.av_io import MediaError, fit_size, video_frames
from pipeline.messages import VideoFrame
from pipeline.node import Node, Output
from pipeline.retry import Reconnecting
from pipeline.supervisor import ConfigError

#: the largest frame asked for: 8K UHD (either way round); beyond it a typo (width: 20000) would
#: have every node allocate gigabytes
MAX_SIDE, MAX_PIXELS, MAX_FPS = 7680, 7680 * 4320, 240.0


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
            if max(self.width, self.height) > MAX_SIDE or self.width * self.height > MAX_PIXELS:
                raise ValueError(f"width={self.width} height={self.height}: at most {MAX_SIDE} a side and "
                                 f"{MAX_PIXELS // 1_000_000} Mpixel (8K UHD)")
            if self.fps > MAX_FPS:
                raise ValueError(f"fps={self.fps:g}: at most {MAX_FPS:g}")
            if not 0 < self.retry_initial_s <= self.retry_max_s <= 3600:
                raise ValueError("need 0 < retry_initial_s <= retry_max_s <= 3600")
            if self.give_up_after < 0:
                raise ValueError(f"give_up_after must be ≥ 0, got {self.give_up_after}")
            if not is_device(self.source) and not Path(self.source).is_file():
                raise ValueError(f"source {self.source!r}: no such file (a device is an index like '0' or a URL)")

    outputs = {"frames": Output(VideoFrame, doc="BGR uint8; capture_ns at grab (files: epoch_ns + pts)")}
    #: frames sent in the run (frame_index goes on after a restart); a device's first grab (its pts origin)
    carries = ("frames", "first_grab_ns")

    @classmethod
    def preflight(cls, params: Params) -> None:
        """Before the graph starts (pipeline.supervisor.preflight): a file must open, have video and decode;
        a local camera must exist. A camera that exists and then fails or is unplugged is retried (`open`);
        one that was never there is a configuration mistake, said in one line before anything starts."""
        if not is_device(params.source):
            try:
                video_frames(params.source).close()
            except MediaError as exc:
                raise ConfigError(str(exc)) from None
        elif "://" not in params.source and sys.platform.startswith("linux"):  # V4L2: cameras are /dev/videoN
            node = Path(f"/dev/video{params.source}" if params.source.isdigit() else params.source)
            if not node.exists():
                present = sorted(str(p) for p in Path("/dev").glob("video*"))
                raise ConfigError(f"camera {params.source!r}: {node} does not exist on this machine "
                                  f"(cameras: {', '.join(present) if present else 'none found'})")

    def open(self) -> None:
        p = self.params
        self.is_file = not is_device(p.source)
        self.loop_offset_s = 0.0  # file time added per loop, so timestamps never go back
        self.last_pts_s = self.frame_s = 0.0
        self.due_s = 0.0  # next pts to keep when thinning to `fps`
        # devices: pts counts from the first grab, across reconnects (and restarts)
        self.first_grab_ns = self.carried["first_grab_ns"]
        self.done = False  # files: the end was reached
        self.camera = Reconnecting(self, "camera", self._open_device, lambda cap: cap.release(), (MediaError,),
                                   p.retry_initial_s, p.retry_max_s, p.give_up_after)
        self.counters["frames"] = self.carried["frames"]  # 0, or what the process before this one sent
        self.pass_s = 0.0  # files: the length of one pass, where a restart had to know it (`loop`)
        self.frames = None  # files: the decoder, a generator
        self.refusal = ""  # why this node cannot run as configured (its summary, for the supervisor)
        if self.is_file:  # an unreadable file fails here, before the graph starts
            try:
                self.frames = video_frames(p.source, p.width, p.height)
            except MediaError as exc:
                self.refusal = str(exc)
                raise ConfigError(self.refusal) from None
            self.counters["connected"] = 1
            self.paced_by_media = p.realtime  # lossless: the other sources keep pace with this file
        # a file paced by its timestamps, restarted: go on at resume_at_ns() (known once the graph started)
        self.resuming = self.is_file and p.realtime and self.restarted
        self.catching_up = False  # frames before the resume point are skipped, not sent late

    def step(self) -> bool:
        if self.resuming:
            self.resuming = False
            self._resume()
        frame = self._next_file_frame() if self.is_file else self.camera.read(self._grab)
        if frame is None:  # reopening (a looping file, a lost camera) or the end
            return not (self.done or self.camera.gave_up)
        image, pts_s = frame
        self.frame_s = pts_s - self.last_pts_s if pts_s > self.last_pts_s else self.frame_s
        self.last_pts_s = pts_s
        pts_s += self.loop_offset_s
        if self.catching_up:  # realtime: the resume point moves with the clock while the seek decodes
            if round(pts_s * 1e9) < self.resume_at_ns():
                self.count("skipped_after_restart")
                return True
            self.catching_up = False
        if self.params.fps:  # thin to the asked rate (2 ms slack for rounded timestamps)
            if pts_s + 0.002 < self.due_s:
                return True
            self.due_s = max(self.due_s, pts_s - 0.5 / self.params.fps) + 1 / self.params.fps  # no catch-up burst
        if self.is_file:
            capture_ns = self.epoch_ns + round(pts_s * 1e9)
            if self.params.realtime and not self.pace(round(pts_s * 1e9)):
                return True  # stopping
        else:
            capture_ns = self.grab_ns
        self.carried["frames"] = self.counters["frames"] + 1  # first: a restart may skip a number, never reuse one
        self.send("frames", VideoFrame(image=image, frame_index=self.counters["frames"], pts_s=pts_s,
                                       capture_ns=capture_ns))
        self.count("frames")
        return True

    def summary(self) -> str:
        return getattr(self, "refusal", "") or f"{self.counters.get('frames', 0)} frames read"

    def close(self) -> None:
        self.camera.close()
        if self.frames is not None:
            self.frames.close()  # a generator: closing it closes the file

    # -- what is the camera's own: reading a file, opening and grabbing from a device -----

    def _resume(self) -> None:
        """A restarted process: read on from ``resume_at_ns()`` instead of the file's start; a looping
        file in the pass that time falls in (one pass is the video stream's duration)."""
        p = self.params
        at_s = self.resume_at_ns() / 1e9
        self.pass_s = _video_duration_s(p.source) if p.loop else 0.0
        passes = int(at_s // self.pass_s) if self.pass_s > 0 else 0
        self.loop_offset_s = passes * self.pass_s
        self.last_pts_s = at_s - self.loop_offset_s
        self.frames.close()
        self.frames = _video_frames_from(p.source, p.width, p.height, at_s - self.loop_offset_s)
        self.catching_up = True
        self.log.info("restarted: going on at %.2f s of the graph's clock (%.2f s into %s, pass %d)",
                      at_s, at_s - self.loop_offset_s, p.source, passes + 1)

    def _next_file_frame(self) -> tuple[np.ndarray, float] | None:
        """The file's next frame; None when it starts over (``loop``) or ends (``done``)."""
        p = self.params
        try:
            return next(self.frames)
        except StopIteration:
            if p.loop:  # the next pass starts one frame later (or a pass later, as a restart placed it)
                self.loop_offset_s += self.pass_s or self.last_pts_s + self.frame_s
                self.frames = video_frames(p.source, p.width, p.height)
                return None
        except MediaError as exc:
            self.log.error("%s; ending the stream", exc)
            self.count("errors")
        self.done = True
        return None

    def _open_device(self):  # -> cv2.VideoCapture
        """Open a device or URL with OpenCV; its frames are stamped the moment they are grabbed."""
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
        self.log.info("camera %r open", p.source)
        return cap

    def _grab(self, cap) -> tuple[np.ndarray, float]:  # noqa: ANN001  (cv2.VideoCapture)
        import cv2

        try:
            ok = cap.grab()
            self.grab_ns = time.monotonic_ns()  # the capture time: before the decode in retrieve()
            frame = cap.retrieve()[1] if ok else None
        except cv2.error as exc:
            raise MediaError(f"camera {self.params.source!r}: {exc}") from None
        if frame is None:
            raise MediaError(f"camera {self.params.source!r} stopped delivering frames")
        if not self.first_grab_ns:
            self.first_grab_ns = self.carried["first_grab_ns"] = self.grab_ns
        w, h = fit_size(self.params.width, self.params.height, frame.shape[1], frame.shape[0])
        if (w, h) != (frame.shape[1], frame.shape[0]):  # the driver ignored the size we asked
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        return frame, (self.grab_ns - self.first_grab_ns) / 1e9


def _video_duration_s(source: str) -> float:
    """One pass of a file's video: its stream's duration (the container's if the stream has none)."""
    import av

    try:
        with av.open(source) as container:
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else 0.0
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise MediaError(f"{source}: cannot read its duration: {exc}") from None


def _video_frames_from(source: str, width: int, height: int, start_s: float):  # -> Iterator[(image, pts_s)]
    """``media.av_io.video_frames`` from media time ``start_s`` on (pts from the stream's start): a seek
    to the keyframe before it, then frames decoded but not converted up to it, so going on late in a
    long file costs one GOP, not the file so far. (It belongs beside video_frames in media/av_io.py.)"""
    import av

    try:
        container = av.open(source)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{source}: cannot open as video: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = stream.start_time or 0
        if start_s > 0:
            container.seek(origin + int(start_s / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            pts_s = float((frame.pts - origin) * stream.time_base)
            if pts_s < start_s - 1e-6:
                continue
            w, h = fit_size(width, height, frame.width, frame.height)
            yield frame.to_ndarray(format="bgr24", width=w, height=h), pts_s
    except av.FFmpegError as exc:
        raise MediaError(f"{source}: decoding video failed: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        container.close()
