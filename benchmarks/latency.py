"""Glass-to-glass latency: capture → renderer output, through the real multi-process graph.

    python benchmarks/latency.py [--seconds 10] [--no-localization]

A 640×480 @ 30 fps clip with audio is generated (a moving pattern plus a tone; nothing to
download), then played by the camera and microphone nodes *in real time*, paced from the
graph's start exactly as a live device would deliver it, through every node of the demo
graph (STFT, and with localization the visual/audio encoders and fusion) into the
renderer, which writes an MP4. The figure is the renderer's ``glass_to_output_ms``: now −
the frame's capture timestamp, taken when the frame has been drawn and handed to the
encoder. Goal (issue 3): p50 ≤ 40 ms, p99 ≤ 80 ms on 2 cores with all nodes running.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes import NODE_TYPES  # noqa: E402
from pipeline.graph import validate_graph  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402


def make_clip(path: Path, seconds: float, width: int = 640, height: int = 480, fps: int = 30) -> None:
    import cv2

    from media.writers import Mp4Writer

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)
    with Mp4Writer(path, width, height, fps, sample_rate_hz=rate) as mp4:
        for i in range(int(seconds * fps)):
            frame = np.full((height, width, 3), 40, np.uint8)
            x = int((i * 7) % (width - 80))
            cv2.rectangle(frame, (x, 200), (x + 80, 280), (0, 200, 255), -1)
            cv2.putText(frame, f"{i}", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
            mp4.write_frame(frame)
        mp4.write_audio(tone)


def graph(clip: Path, out: Path, localization: bool) -> dict:
    nodes: dict = {
        "camera": {"type": "camera", "params": {"source": str(clip), "realtime": True}},
        "microphone": {"type": "microphone", "params": {"source": str(clip), "chunk_ms": 10}},
        "stft": {"type": "stft", "inputs": {"audio": "microphone/audio"}},
        "renderer": {"type": "renderer", "params": {"mp4_path": str(out), "fps": 30},
                     "inputs": {"video": "camera/frames",
                                "audio": {"from": "microphone/audio", "size": 512}}},
    }
    if localization:
        nodes.update({
            "visual_encoder": {"type": "visual_encoder", "inputs": {"video": "camera/frames"}},
            "audio_encoder": {"type": "audio_encoder", "inputs": {"logmel": "stft/logmel"}},
            "fusion": {"type": "fusion", "inputs": {"features": "visual_encoder/features",
                                                    "embedding": "audio_encoder/embedding"}},
        })
        nodes["renderer"]["inputs"]["heatmap"] = "fusion/heatmap"
    return {"name": "latency", "nodes": nodes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-localization", action="store_true", help="camera/mic/stft/renderer only")
    args = parser.parse_args()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        clip, out = Path(tmp) / "clip.mp4", Path(tmp) / "out.mp4"
        make_clip(clip, args.seconds)
        spec = validate_graph(graph(clip, out, not args.no_localization), NODE_TYPES, source="benchmarks/latency.py")
        supervisor = Supervisor(spec, on_event=lambda text: None)
        supervisor.start()
        code = supervisor.run(timeout_s=args.seconds + 60)
        if code != 0:
            print(f"graph failed: {supervisor.failure}", file=sys.stderr)
            return 1
        stats = {name: node.stats for name, node in supervisor.nodes.items()}
    render = stats["renderer"]
    g2g = render.get("glass_to_output_ms", {})
    frames = render["inputs"]["video"]
    print(f"glass-to-output latency, 640x480@30 file paced in real time, {args.seconds:.0f} s, "
          f"{os.cpu_count()} cores, nodes: {', '.join(stats)}")
    print(f"  capture → renderer output: p50 {g2g.get('p50', float('nan')):.1f} ms, "
          f"p99 {g2g.get('p99', float('nan')):.1f} ms over {g2g.get('n', 0)} frames "
          f"(video input: {frames['received']} received, {frames['dropped']} dropped by `latest`, "
          f"{frames['lost']} lost)")
    if "heatmap" in render["inputs"]:
        hm = render["inputs"]["heatmap"]
        print(f"  heatmaps at the renderer: {hm['received']} received, age p50 "
              f"{hm['latency_ms'].get('p50', float('nan')):.1f} ms, p99 {hm['latency_ms'].get('p99', float('nan')):.1f} ms "
              "(capture of the frame → heatmap ready)")
    for name, s in stats.items():
        c = s.get("compute_ms", {})
        if c:
            print(f"  {name:<15} compute p50 {c['p50']:.2f} ms  p99 {c['p99']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
