"""Bad media through `python launch.py`: each case must stop at once, in one line, with exit code 2.

    python benchmarks/bad_media.py

For each case: the exit code, the seconds it took, how many lines it printed (and how many
tracebacks), whether anything was written under --out, and its last line. Cases: a text file
renamed .mp4, a 0-byte file, the demo clip cut in half (its index is at the end: nothing opens),
a video without audio given to the microphone, a WAV given to the camera, camera.width=20000,
and the cut clip given with --input.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "demo.mp4"


def make_files(folder: Path) -> dict[str, Path]:
    text, empty, cut, silent, wav = (folder / n for n in ("notes.mp4", "empty.mp4", "cut.mp4", "silent.mp4", "speech.wav"))
    text.write_text("not a video, just text with a video's name\n")
    empty.write_bytes(b"")
    data = DEMO.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with av.open(str(silent), "w") as container:  # video, no audio stream
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    sf.write(wav, np.zeros(16000, np.float32), 16000)  # audio, no video stream
    return {"text": text, "empty": empty, "cut": cut, "silent": silent, "wav": wav}


def both(path: Path) -> list[str]:
    return ["--set", f"camera.source={path}", "--set", f"microphone.source={path}"]


def cases(files: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "text renamed .mp4": both(files["text"]),
        "0-byte file": both(files["empty"]),
        "truncated MP4 (half of demo.mp4)": both(files["cut"]),
        "video without audio → microphone": ["--set", f"microphone.source={files['silent']}"],
        "audio without video → camera": ["--set", f"camera.source={files['wav']}"],
        "camera.width=20000": ["--set", "camera.width=20000"],
        "truncated MP4 via --input": ["--input", str(files["cut"])],
    }


def main() -> int:
    worst = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_files(folder)
        print(f"{'case':<36} {'exit':>4} {'s':>5} {'lines':>5} {'tb':>3} {'wrote':>5}  last line")
        for name, argv in cases(files).items():
            out = folder / "out"
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "launch.py", *argv, "--out", str(out)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            seconds = time.monotonic() - t0
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            tracebacks = sum("Traceback" in line for line in lines)
            wrote = out.exists() and any(out.rglob("*"))
            print(f"{name:<36} {proc.returncode:>4} {seconds:>5.1f} {len(lines):>5} {tracebacks:>3} "
                  f"{'yes' if wrote else 'no':>5}  {lines[-1] if lines else ''}")
            ok = proc.returncode == 2 and tracebacks == 0 and not wrote
            worst = max(worst, 0 if ok else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
