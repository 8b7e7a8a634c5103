"""Record the demo's every topic to MCAP, replay it into the renderer: the same voices come out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from pipeline import recording

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_recorded_demo_replays_into_the_renderer_with_identical_output(tmp_path: Path) -> None:
    mcap = tmp_path / "demo.mcap"
    out = run("--record", str(mcap), "--out", str(tmp_path / "live"))
    assert f"wrote {mcap}" in out
    topics = {topic for topic, _, _ in recording.read(mcap)}
    assert {"camera/frames", "microphone/audio", "fusion/heatmap", "faces/faces", "separator/voices"} <= topics
    out = run("configs/replay.yaml", "--set", f"replay.file={mcap}", "--out", str(tmp_path / "replayed"))
    assert "messages replayed" in out
    live, replayed = tmp_path / "live" / "voices", tmp_path / "replayed" / "replayed_voices"
    wavs = sorted(p.name for p in live.glob("voice_*.wav"))
    assert len(wavs) >= 2 and wavs == sorted(p.name for p in replayed.glob("voice_*.wav"))
    for name in wavs:  # the voices, sample for sample, and which face each belongs to
        assert np.array_equal(sf.read(str(live / name))[0], sf.read(str(replayed / name))[0]), name
    assert json.loads((live / "voices.json").read_text()) == json.loads((replayed / "voices.json").read_text())
    assert frames_in(tmp_path / "live" / "demo.mp4") == frames_in(tmp_path / "replayed" / "replayed.mp4")


def test_a_cut_recording_is_an_error_not_garbage() -> None:
    import pytest

    frames = [b"AudioChunk", b"{}", b"\x00" * 8]
    assert recording.unpack(recording.pack(frames)) == frames
    with pytest.raises(ValueError, match="cut short"):
        recording.unpack(recording.pack(frames)[:-3])
