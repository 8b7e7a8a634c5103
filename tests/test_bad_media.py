"""Bad media and absurd parameters stop a run at once, in one line, with exit code 2, leaving nothing.

Through ``launch.py`` (what a user sees): a text file renamed .mp4, a 0-byte file, the demo clip cut
in half, a silent video given to the microphone, a WAV given to the camera, camera.width=20000.
Through the nodes (what the supervisor relies on): each reader refuses in ``preflight`` and in
``open()`` with a :class:`ConfigError` whose reason starts with the file.
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

from nodes.camera import Camera
from nodes.microphone import Microphone
from pipeline.harness import Harness
from pipeline.supervisor import CONFIG_ERROR_EXIT, ConfigError
from tests.media_files import video_only_clip

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "demo" / "demo.mp4"




@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_media")
    text, empty, cut, wav = (folder / n for n in ("notes.mp4", "empty.mp4", "cut.mp4", "speech.wav"))
    text.write_text("not a video, just text with a video's name\n")
    empty.write_bytes(b"")
    data = DEMO_CLIP.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    return {"text": text, "empty": empty, "cut": cut, "silent": video_only_clip(folder / "silent.mp4"), "wav": wav}


def both(path: Path) -> list[str]:
    return ["--set", f"camera.source={path}", "--set", f"microphone.source={path}"]


CASES = {
    "text renamed .mp4": (lambda f: both(f["text"]), "node 'camera': {text}: cannot open as video: Invalid data"),
    "0-byte file": (lambda f: both(f["empty"]), "node 'camera': {empty}: cannot open as video"),
    "truncated MP4": (lambda f: both(f["cut"]), "node 'camera': {cut}: cannot open as video"),
    "video without audio for the microphone": (lambda f: ["--set", f"microphone.source={f['silent']}"],
                                               "node 'microphone': {silent}: no audio stream"),
    "audio without video for the camera": (lambda f: ["--set", f"camera.source={f['wav']}"],
                                           "node 'camera': {wav}: no video stream"),
    "camera.width=20000": (lambda f: ["--set", "camera.width=20000"],
                           "node 'camera' params: width=20000 height=0: at most 7680 a side"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_media_stops_the_run_in_one_line_with_exit_2(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    argv, says = CASES[case]
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "launch.py", *argv(files), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert lines == [lines[-1]] and lines[-1].startswith("error: "), lines  # one line, nothing else
    assert says.format(**files) in lines[-1], lines[-1]
    assert "Traceback" not in proc.stderr and "wrote" not in proc.stdout and "starting" not in proc.stdout
    assert not out.exists(), "a refused run wrote something"
    assert took < 10, f"{took:.1f} s"  # ≈ 0.6 s here; generous for a loaded CI box


# -- the nodes' own refusals ----------------------------------------------------------------

@pytest.mark.parametrize("name, node, says", [
    ("text", Camera, "cannot open as video: Invalid data"),
    ("empty", Microphone, "cannot open as audio: Invalid data"),
    ("cut", Camera, "cannot open as video"),
    ("silent", Microphone, "no audio stream"),
    ("wav", Camera, "no video stream"),
])
def test_a_reader_refuses_in_preflight_and_at_open(name: str, node: type, says: str, files: dict[str, Path]) -> None:
    path = files[name]
    params = node.make_params({"source": str(path)})  # it exists: the param check passes
    with pytest.raises(ConfigError) as refused:
        node.preflight(params)
    assert refused.value.code == CONFIG_ERROR_EXIT and str(refused.value) == refused.value.reason
    assert refused.value.reason.startswith(f"{path}: ") and says in refused.value.reason, refused.value.reason
    harness = Harness(node, {"source": str(path)})
    with pytest.raises(ConfigError) as at_open:
        harness.node.open()
    harness.node.close()  # still safe after a refused open
    assert at_open.value.reason == refused.value.reason
    assert harness.node.summary() == refused.value.reason  # what the last heartbeat carries


def test_a_good_file_passes_and_its_first_frame_is_not_lost() -> None:
    Camera.preflight(Camera.make_params({"source": str(DEMO_CLIP)}))
    Microphone.preflight(Microphone.make_params({"source": str(DEMO_CLIP)}))
    with Harness(Camera, {"source": str(DEMO_CLIP), "realtime": False}) as h:
        h.run_source(max_steps=3)
    assert [f.pts_s for f in h.outputs["frames"]][:1] == [0.0]
    with Harness(Microphone, {"source": str(DEMO_CLIP), "realtime": False}) as h:
        h.run_source(max_steps=3)
    assert [c.first_sample for c in h.outputs["audio"]] == [0, 160, 320]


@pytest.mark.parametrize("node, params, says", [
    (Camera, {"width": 20000}, "at most 7680 a side"),
    (Camera, {"width": 7680, "height": 7680}, "Mpixel"),
    (Camera, {"fps": 1000.0}, "fps=1000: at most 240"),
    (Camera, {"retry_initial_s": 1.0, "retry_max_s": 1e9}, "retry_max_s <= 3600"),
    (Camera, {"give_up_after": -1}, "give_up_after"),
    (Microphone, {"sample_rate_hz": 10_000_000}, "sample_rate_hz=10000000"),
    (Microphone, {"chunk_ms": 100_000}, "chunk_ms=100000"),
    (Microphone, {"buffer_s": 1e6}, "buffer_s <= 60"),
    (Microphone, {"give_up_after": -1}, "give_up_after"),
])
def test_absurd_parameters_are_refused(node: type, params: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        node.make_params(params)


def test_sane_limits_pass() -> None:
    Camera.make_params({"width": 7680, "height": 4320, "fps": 240.0})
    Camera.make_params({"width": 4320, "height": 7680})  # portrait 8K
    Microphone.make_params({"sample_rate_hz": 48000, "chunk_ms": 20, "buffer_s": 10.0})
