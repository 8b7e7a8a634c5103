"""launch.py's command line for running on your own video: --input, --out, --set, --duration.

--input and --out become plain node.param=value overrides (the same list --set makes), so most
tests check that translation without running anything; one short run proves the files land
under --out, and the failure tests prove a bad --input stops in one line before any process starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import launch
from nodes import NODE_TYPES
from pipeline.graph import load_graph
from tests.media_files import video_only_clip

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "demo" / "demo.mp4"


def run_launch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)




# -- the command line → a run -------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--set", "camera.width=320", "--duration", "5"],
    ["--duration", "5", "--set", "camera.width=320", "configs/demo.yaml"],
    ["configs/demo.yaml", "--set", "camera.width=320", "--duration", "5"],
    ["run", "--set", "camera.width=320", "configs/demo.yaml", "--duration", "5"],
])
def test_set_and_duration_work_with_or_without_a_config_before_or_after_it(argv: list[str]) -> None:
    args = launch.parse_args(argv, ROOT)
    assert args.command == "run" and Path(args.config).name == "demo.yaml"
    assert args.set == ["camera.width=320"] and args.duration == 5.0
    assert args.input is None and args.out is None


def test_input_and_out_paths_are_the_callers(tmp_path: Path) -> None:
    """launch.py runs from the repository root; a user's relative paths mean their own directory."""
    args = launch.parse_args(["configs/voices.yaml", "--input", "talk.mp4", "--out", "results"], tmp_path)
    assert args.config == "configs/voices.yaml"
    assert args.input == str(tmp_path / "talk.mp4") and args.out == str(tmp_path / "results")
    for device in ("0", "/dev/video2"):  # devices are not paths
        assert launch.parse_args(["--input", device], tmp_path).input == device


def test_other_commands_still_parse() -> None:
    assert launch.parse_args(["check", "configs/demo.yaml"], ROOT).command == "check"
    assert launch.parse_args(["top", "--once"], ROOT).once
    assert launch.parse_args(["--list-nodes"], ROOT).list_nodes


# -- --input and --out → overrides ---------------------------------------------------------

def test_a_file_feeds_both_camera_and_microphone() -> None:
    assert launch.input_overrides("/videos/talk.mp4", ["camera", "microphone", "renderer"]) == [
        "camera.source='/videos/talk.mp4'", "microphone.source='/videos/talk.mp4'"]


@pytest.mark.parametrize("device", ["0", "/dev/video0"])
def test_a_webcam_goes_with_the_default_microphone(device: str) -> None:
    overrides = launch.input_overrides(device, ["camera", "microphone"])
    graph = load_graph(ROOT / "configs" / "voices.yaml", NODE_TYPES, overrides=overrides)
    assert graph.nodes["camera"].params["source"] == device  # a string: '0', not the number 0
    assert graph.nodes["microphone"].params["source"] == "default"


def test_input_needs_nodes_named_camera_and_microphone() -> None:
    with pytest.raises(launch.UsageError, match="no 'microphone'"):
        launch.input_overrides("talk.mp4", ["camera", "renderer"])
    with pytest.raises(launch.UsageError, match="no 'camera' and no 'microphone'"):
        launch.input_overrides("talk.mp4", ["source", "sink"])


def test_out_moves_every_file_a_sink_writes_into_the_folder() -> None:
    def moved(config: str) -> dict[str, str]:  # param name → new value, whichever sink node has it
        overrides = launch.output_overrides(load_graph(ROOT / "configs" / config, NODE_TYPES), "/tmp/results")
        return {o.split("=")[0].split(".")[1]: o.split("=", 1)[1] for o in overrides}

    assert moved("demo.yaml") == {"mp4_path": "'/tmp/results/demo.mp4'", "wav_dir": "'/tmp/results/voices'"}
    assert moved("voices.yaml") == {"wav_dir": "'/tmp/results/voices'"}  # no MP4 asked: none made
    with pytest.raises(launch.UsageError, match="writes a file"):  # a window and a browser view only
        launch.output_overrides(load_graph(ROOT / "configs" / "webcam.yaml", NODE_TYPES), "/tmp/results")


def test_set_comes_first_and_the_whole_list_validates(tmp_path: Path) -> None:
    args = launch.parse_args(["--input", str(DEMO_CLIP), "--out", str(tmp_path), "--set", "camera.width=320",
                              "--set", "renderer.mp4_path=mine.mp4"], ROOT)
    overrides = launch.run_overrides(args)
    assert overrides[:2] == ["camera.width=320", "renderer.mp4_path=mine.mp4"]
    graph = load_graph(args.config, NODE_TYPES, overrides=overrides)
    assert graph.nodes["camera"].params["source"] == str(DEMO_CLIP) and graph.nodes["camera"].params["width"] == 320
    assert graph.nodes["microphone"].params["source"] == str(DEMO_CLIP)
    assert graph.nodes["renderer"].params["mp4_path"] == str(tmp_path / "mine.mp4")
    assert graph.nodes["renderer"].params["wav_dir"] == str(tmp_path / "voices")


def test_input_files_are_probed_for_video_and_audio(tmp_path: Path) -> None:
    launch.check_input_file(str(DEMO_CLIP))
    with pytest.raises(launch.UsageError, match="no audio stream"):
        launch.check_input_file(str(video_only_clip(tmp_path / "silent.mp4")))
    sf.write(tmp_path / "speech.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(launch.UsageError, match="no video stream"):
        launch.check_input_file(str(tmp_path / "speech.wav"))


# -- whole runs ------------------------------------------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video, just text with a video's name\n")
    no_mic = tmp_path / "no_mic.yaml"
    no_mic.write_text("nodes:\n  camera: {type: camera, params: {source: demo/demo.mp4}}\n")
    silent = video_only_clip(tmp_path / "silent.mp4")
    return {
        "text renamed .mp4": (["--input", str(notes)], f"cannot open '{notes}': Invalid data"),
        "missing file": (["--input", str(tmp_path / "gone.mp4")], f"{tmp_path / 'gone.mp4'}: no such file"),
        "no audio stream": (["configs/voices.yaml", "--input", str(silent)], f"{silent}: no audio stream"),
        "no microphone node": ([str(no_mic), "--input", str(DEMO_CLIP)], "no 'microphone'"),
    }


@pytest.mark.parametrize("case", ["text renamed .mp4", "missing file", "no audio stream", "no microphone node"])
def test_a_bad_input_stops_before_the_graph_in_one_line(case: str, tmp_path: Path) -> None:
    argv, says = _bad_inputs(tmp_path)[case]
    t0 = time.monotonic()
    proc = run_launch(*argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 30
    assert proc.stderr.startswith("error: --input") and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "starting" not in proc.stdout  # no node was started


def test_a_run_on_your_own_video_writes_under_out(tmp_path: Path) -> None:
    """`launch.py CONFIG --input FILE --out DIR`: both sources read FILE, every file lands in DIR. A file given
    on the command line runs lossless to its end (a wall-clock --duration would cut it short on a loaded
    machine: --duration has its own tests above), so every voice covers the whole clip."""
    out = tmp_path / "results"
    proc = run_launch("configs/voices.yaml", "--input", str(DEMO_CLIP), "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wrote = [line.split("wrote ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("[earshot] wrote ")]
    assert wrote and all(Path(path).is_relative_to(out) for path in wrote), wrote
    voices = sorted((out / "voices").glob("voice_*.wav"))
    assert voices and all(sf.info(str(v)).duration > 8.5 for v in voices), proc.stdout[-2000:]  # the clip: 9 s
