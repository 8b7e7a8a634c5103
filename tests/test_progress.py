"""The progress of a lossless run over files: frames of N and speed × real time, from heartbeats.

The arithmetic is tested with made-up heartbeats and times; one run of the demo graph shows the
bar end at N of N, with the closing summary intact after it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from nodes import NODE_TYPES
from pipeline.graph import load_graph
from pipeline.progress import Progress, ProgressDisplay, for_graph

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"


def beat(frames: int) -> dict:
    """A renderer's heartbeat stats, as far as progress reads them."""
    return {"counters": {"frames_received": frames, "mp4.frames_written": frames}, "compute_ms": {}}


def test_fraction_and_speed_follow_the_heartbeats() -> None:
    progress = Progress(total_frames=225, fps=25.0)
    assert progress.fraction == 0 and progress.speed is None
    progress.start(100.0)
    progress.observe("camera", {"counters": {"frames": 200}}, 100.5)  # sources do not count: nothing came through
    assert progress.frames == 0
    progress.observe("renderer", beat(50), 102.0)  # 2 s of media in 2 s of wall time
    assert progress.fraction == 50 / 225 and progress.speed == 1.0
    progress.observe("renderer", beat(150), 104.0)  # 6 s of media in 4 s
    assert progress.speed == 1.5
    assert progress.line() == "lossless: 150/225 frames, 1.5× real time"
    progress.observe("renderer", beat(225), 110.0)
    progress.observe("renderer", beat(225), 115.0)  # the same count later (closing): the speed stays
    assert progress.fraction == 1.0 and progress.speed == 9.0 / 10.0
    assert progress.line() == "lossless: 225/225 frames, 0.90× real time"


def test_the_slowest_of_two_sinks_is_the_progress() -> None:
    progress = Progress(total_frames=100, fps=10.0)
    progress.start(0.0)
    progress.observe("renderer", beat(80), 1.0)
    progress.observe("preview", beat(30), 1.0)
    assert progress.frames == 30 and progress.fraction == 0.3


def test_a_looping_source_has_no_n_only_the_count_and_speed() -> None:
    progress = Progress(total_frames=None, fps=25.0)
    progress.start(0.0)
    progress.observe("renderer", beat(500), 10.0)
    assert progress.fraction is None and progress.speed == 2.0
    assert progress.line() == "lossless: 500 frames (looping), 2.0× real time"


def test_without_a_terminal_a_line_every_ten_seconds_and_one_at_the_end() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = Progress(total_frames=225, fps=25.0)
    display = ProgressDisplay(progress, bar=False, say=lines.append, clock=lambda: now[0])
    display.tick()
    assert lines == []  # model loading: not progress
    display.start()
    for t, frames in ((4, 40), (9.9, 100), (10, 120), (15, 150), (20.5, 200), (22, 225)):
        now[0] = t
        progress.observe("renderer", beat(frames), t)
        display.tick()
    display.close()
    display.close()  # once only
    assert lines == ["lossless: 120/225 frames, 0.48× real time", "lossless: 200/225 frames, 0.39× real time",
                     "lossless: 225/225 frames, 0.41× real time"]


def test_the_bar_shows_frames_of_n_and_events_do_not_tear_it() -> None:
    now = [0.0]
    stream, events = io.StringIO(), []
    progress = Progress(total_frames=225, fps=25.0)
    display = ProgressDisplay(progress, bar=True, say=events.append, stream=stream, clock=lambda: now[0])
    say = display.around(events.append)
    display.start()
    now[0] = 4.0
    progress.observe("renderer", beat(100), 4.0)
    display.tick()
    say("node 'camera' finished")
    now[0] = 9.0
    progress.observe("renderer", beat(225), 9.0)
    display.close()
    assert events == ["node 'camera' finished"]  # a bar says nothing through the event lines
    last = stream.getvalue().split("\r")[-1]
    assert "225/225 frames" in last and "100%" in last and "1.0× real time" in last, last


def test_which_graphs_have_progress() -> None:
    demo = for_graph(load_graph(DEMO, NODE_TYPES))
    assert demo is not None and (demo.total, demo.fps) == (225, 25.0)  # demo/demo.mp4: 9 s at 25 fps
    looping = for_graph(load_graph(DEMO, NODE_TYPES, overrides=["camera.loop=true"]))
    assert looping is not None and looping.total is None
    thinned = for_graph(load_graph(DEMO, NODE_TYPES, overrides=["camera.fps=10"]))
    assert thinned is not None and (thinned.total, thinned.fps) == (90, 10.0)
    assert for_graph(load_graph(DEMO, NODE_TYPES, overrides=["settings.pace=realtime"])) is None


def test_the_demo_run_shows_progress_up_to_n_of_n(tmp_path) -> None:
    """`launch.py --progress` with stderr a pipe: the bar is drawn anyway and ends at 225/225; the closing
    summary follows, whole, on stdout."""
    proc = subprocess.run([sys.executable, "launch.py", "run", "configs/demo.yaml", "--progress",
                           "--set", f"renderer.mp4_path={tmp_path / 'demo.mp4'}",
                           "--set", f"renderer.wav_dir={tmp_path / 'voices'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bars = [part for part in re.split(r"[\r\n]", proc.stderr) if part.startswith("lossless:")]
    assert bars, proc.stderr[-3000:]
    assert "225/225 frames" in bars[-1] and "× real time" in bars[-1], bars[-3:]
    assert re.search(r"\d+(\.\d+)?× real time", bars[-1]), bars[-1]
    assert "wrote 225 of 225 frames received" in proc.stdout, proc.stdout[-2000:]
    assert "lossless:" not in proc.stdout  # the bar replaces the lines, and stays out of the summary
