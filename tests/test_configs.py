"""The shipped graphs validate against the real node registry, and the demo runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

from nodes import NODE_TYPES
from pipeline.graph import GraphError, load_graph

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "invalid_example.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    graph = load_graph(path, NODE_TYPES)
    assert graph.nodes


def test_the_invalid_example_says_what_is_wrong() -> None:
    with pytest.raises(GraphError, match="node 'renderer' inputs.video: unknown source node 'camra'"):
        load_graph(ROOT / "configs" / "invalid_example.yaml", NODE_TYPES)


def test_the_demo_writes_an_annotated_video_with_audio(tmp_path) -> None:
    """`python launch.py` on the shipped clip, every node in its own process."""
    out = tmp_path / "demo.mp4"
    proc = subprocess.run([sys.executable, "launch.py", "run", "configs/demo.yaml", "--set", f"renderer.mp4_path={out}",
                           "--set", f"renderer.wav_dir={tmp_path / 'voices'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    with av.open(str(ROOT / "demo" / "demo.mp4")) as source:
        source_frames = sum(1 for _ in source.decode(video=0))
    # the demo runs lossless: every frame is drawn and written however loaded the machine is
    assert f"wrote {source_frames} of {source_frames} frames received" in proc.stdout, proc.stdout[-2000:]
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio
        assert sum(1 for _ in container.decode(video=0)) == source_frames
        assert len(audio) == 3  # the mixture + one track per face (2 faces in the clip)
        assert float(container.duration) / 1e6 > 8.5
    voices = sorted((tmp_path / "voices").glob("voice_*.wav"))
    assert len(voices) >= 2, proc.stdout[-2000:]
