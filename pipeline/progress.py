"""Progress of a lossless run over files: frames through the graph of N, and speed × real time.

A lossless run (``settings.pace: lossless``) over a file takes as long as its slowest node, so
its user wants to know how far it is and how fast it goes. Both come from what the graph already
says: N and the frame rate from the video file a source node reads (its ``source`` param), and the
frames done from the heartbeats, as the sinks count them (``frames_received``: frames that came
through the whole graph into the renderer; the slowest such node is the run's progress). Speed is
media seconds done per wall second since the graph started: 2.0× means a 10 s clip takes 5 s.

A looping source (``loop: true``) never ends: there is no N, only the count and the speed.

:class:`Progress` is the arithmetic (unit-tested with made-up heartbeats and times);
:class:`ProgressDisplay` shows it: a tqdm bar on stderr when stderr is a terminal (or when asked,
``launch.py --progress``), else one line every ``every_s`` (10 s) through the supervisor's event
callback, and one closing line, so a log says how a run went without a bar's carriage returns.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from pipeline.graph import GraphSpec, import_node_class
from pipeline.messages import VideoFrame

#: the heartbeat counter of frames that came through the graph (the sinks' vocabulary, media/sinks/sink.py)
FRAMES_KEY = "frames_received"


class Progress:
    """Frames done of ``total_frames`` (None: a looping source, no end), and media seconds done
    per wall second from :meth:`start`. Times are any monotonic seconds (the caller's clock)."""

    def __init__(self, total_frames: int | None, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.total = total_frames
        self.fps = fps
        self.start_s: float | None = None
        self.frames = 0
        self.at_s: float | None = None  # when ``frames`` was last reached
        self.per_node: dict[str, int] = {}

    def start(self, now_s: float) -> None:
        """The graph started (the supervisor's epoch): wall time counts from here, not from model loading."""
        self.start_s = now_s

    def observe(self, node: str, stats: Mapping[str, Any], now_s: float) -> None:
        """A heartbeat's stats. Nodes without the counter are ignored; with several (two renderers),
        the slowest is the progress: the run is done when every one of them is."""
        value = stats.get("counters", {}).get(FRAMES_KEY)
        if value is None:
            return
        self.per_node[node] = int(value)
        frames = min(self.per_node.values())
        if frames != self.frames:
            self.frames, self.at_s = frames, now_s

    @property
    def fraction(self) -> float | None:
        """Frames done of N, 0..1; None when there is no N (looping)."""
        if self.total is None:
            return None
        return min(1.0, self.frames / self.total) if self.total else 1.0

    @property
    def media_s(self) -> float:
        return self.frames / self.fps

    @property
    def speed(self) -> float | None:
        """Media seconds done per wall second since the start, up to the last change (so the
        closing figure is not lowered by the shutdown after the last frame); None before any."""
        if self.start_s is None or self.at_s is None or self.at_s <= self.start_s:
            return None
        return self.media_s / (self.at_s - self.start_s)

    def line(self) -> str:
        """``lossless: 120/225 frames, 0.8× real time`` (``lossless: 120 frames (looping), …`` without N)."""
        count = f"{self.frames} frames (looping)" if self.total is None else f"{self.frames}/{self.total} frames"
        return f"lossless: {count}, {_speed_text(self.speed)}"


def _speed_text(speed: float | None) -> str:
    if speed is None:
        return "…× real time"
    return f"{speed:.2f}× real time" if speed < 1 else f"{speed:.1f}× real time"


def video_length(path: str | Path) -> tuple[int, float]:
    """A video file's frame count and frame rate, from its headers (the MP4 sample table), else by
    counting its packets: no frame is decoded, so a long 1080p file costs milliseconds."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if not rate and stream.duration and stream.time_base:
            rate = frames / float(stream.duration * stream.time_base)
    return frames, rate or 25.0


def for_graph(graph: GraphSpec) -> Progress | None:
    """A :class:`Progress` for a lossless graph whose sources all read files, or None (a realtime
    graph, a device, a URL, or no source of video frames). N is the video source's frame count,
    thinned as its ``fps`` param thins it (rounded: the camera keeps about that many); any source
    that loops makes it None."""
    if graph.settings.pace != "lossless" or not graph.sources:
        return None
    total: int | None = None
    fps = 0.0
    looping = False
    for name in graph.sources:
        spec = graph.nodes[name]
        source = spec.params.get("source")
        if not isinstance(source, str) or "://" in source or not Path(source).is_file():
            return None  # a device or a stream: no N, and no end to wait for
        looping = looping or bool(spec.params.get("loop"))
        outputs = import_node_class(spec.impl).outputs
        if total is None and any(out.type is VideoFrame for out in outputs.values()):
            try:
                total, fps = video_length(source)
            except Exception:  # noqa: BLE001 - a display must never stop a run; preflight judges the file
                return None
            wanted = spec.params.get("fps") or 0
            if isinstance(wanted, (int, float)) and 0 < wanted < fps:
                total, fps = max(1, round(total * wanted / fps)), float(wanted)
    if total is None:
        return None
    return Progress(None if looping else total, fps)


def _bar_size(stream: TextIO) -> dict[str, Any]:
    """tqdm's size: the terminal's, followed as it changes; a terminal that says it has no rows (a
    pty nobody sized: `script`, some CI runners) gets a fixed 100 columns, where tqdm would draw nothing."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a terminal (a pipe, a StringIO): tqdm copes
        return {}
    return {"dynamic_ncols": True} if columns and rows else {"ncols": columns or 100, "nrows": 20}


class ProgressDisplay:
    """Shows a :class:`Progress`: a tqdm bar on ``stream`` if ``bar``, else ``say(line)`` every
    ``every_s`` once the graph runs. :meth:`close` shows the last state (the bar's final render, or
    one last line). :meth:`around` wraps an event printer so its lines do not tear the bar."""

    def __init__(self, progress: Progress, bar: bool, say: Callable[[str], None], every_s: float = 10.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.progress = progress
        self.say = say
        self.every_s = every_s
        self.clock = clock
        self.next_line_s = math.inf  # lines start with the graph
        self.closed = False
        self.want_bar, self.stream = bar, stream
        self.bar = None  # drawn from the start on: model loading is not progress
        self.drawn_s = 0.0

    def start(self) -> None:
        now = self.clock()
        self.progress.start(now)
        self.next_line_s = now + self.every_s
        if self.want_bar and not self.closed:
            from tqdm import tqdm

            total = self.progress.total
            fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames [{elapsed}<{remaining}{postfix}]"
                   if total is not None else "{desc}: {n_fmt} frames (looping) [{elapsed}{postfix}]")
            stream = self.stream or sys.stderr
            self.bar = tqdm(total=total, desc="lossless", file=stream, bar_format=fmt, leave=True, mininterval=0.2,
                            postfix=_speed_text(None), **_bar_size(stream))

    def tick(self) -> None:
        """Called often (each supervisor poll): redraw the bar, or say a line when one is due."""
        if self.closed:
            return
        now = self.clock()
        if self.bar is not None:
            if self.bar.n != self.progress.frames or now - self.drawn_s >= 1.0:  # elapsed time moves too
                self._draw()
        elif now >= self.next_line_s:
            self.next_line_s += self.every_s
            self.say(self.progress.line())

    def _draw(self) -> None:
        self.drawn_s = self.clock()
        self.bar.n = self.progress.frames
        self.bar.set_postfix_str(_speed_text(self.progress.speed), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """The last state, once: before the run's closing summary, never inside it."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self._draw()
            self.bar.close()
        elif self.progress.start_s is not None:  # a run that never started has nothing to say
            self.say(self.progress.line())

    def around(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """``say`` that clears the bar while it prints and draws it again after."""

        def said(text: str) -> None:
            if self.bar is None or self.closed:
                say(text)
                return
            self.bar.clear()
            say(text)
            self.bar.refresh()

        return said
