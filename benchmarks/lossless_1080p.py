"""A 1080p file, lossless, end to end: does every frame and every sample come out, and how fast?

    python benchmarks/lossless_1080p.py [--keep]

Runs ``python launch.py --input ../shared/data/video/two_speakers_split_screen.mp4 --out DIR``
(lossless is the default for a file given with --input) and prints what the issue asks of
lossless mode: the input's frames against the frames in the output MP4 (both decoded with PyAV),
each voice track's length against the mixture's (in the MP4 and as WAVs), wall time and speed ×
real time (the whole command, model loading included, and the graph's own figure from its closing
progress line), and the load average before and after (a loaded machine is slower, never lossy).
Exit 0 when nothing was lost, 1 when something was, 2 when the shared file is not there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import soundfile

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT.parent / "shared" / "data" / "video" / "two_speakers_split_screen.mp4"


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def audio_tracks_s(path: Path) -> dict[str, float]:
    """Each audio stream of a file, by its title, as decoded seconds."""
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        samples = {stream.index: 0 for stream in streams}
        for packet in container.demux(streams):
            for frame in packet.decode():
                samples[packet.stream.index] += frame.samples
        return {(stream.metadata.get("title") or stream.metadata.get("handler_name") or f"audio_{stream.index}"):
                samples[stream.index] / stream.rate for stream in streams}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the output folder (its path is printed)")
    args = parser.parse_args(argv)
    if not INPUT.is_file():
        print(f"lossless_1080p: {INPUT} is missing (the shared footage is not on this machine); nothing measured")
        return 2
    out_dir = Path(tempfile.mkdtemp(prefix="lossless_1080p-"))
    with av.open(str(INPUT)) as container:
        video = container.streams.video[0]
        size, media_s = f"{video.width}×{video.height}", float(container.duration or 0) / 1e6
    load_before = os.getloadavg()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "launch.py", "--input", str(INPUT), "--out", str(out_dir)],
                          cwd=ROOT, capture_output=True, text=True)
    wall_s = time.monotonic() - start
    load_after = os.getloadavg()
    input_audio_s = next(iter(audio_tracks_s(INPUT).values()), 0.0)
    print(f"input: {INPUT.name}, {size}, {media_s:.2f} s (its audio {input_audio_s:.3f} s)")
    print(f"launch.py exit code {proc.returncode}; wall {wall_s:.1f} s (models loading included): "
          f"{media_s / wall_s:.2f}× real time")
    progress = [line for line in proc.stdout.splitlines() if "] lossless:" in line]
    if progress:
        print(f"the graph's own progress line (from its start): {progress[-1].split('] ', 1)[1]}")
    print("load average (1/5/15 min): before %.2f %.2f %.2f, after %.2f %.2f %.2f (%d cores)"
          % (*load_before, *load_after, os.cpu_count() or 0))
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:])
        return 1
    mp4 = out_dir / "demo.mp4"
    input_frames, output_frames = decoded_frames(INPUT), decoded_frames(mp4)
    lost = input_frames != output_frames
    print(f"frames: input {input_frames}, output MP4 {output_frames}{'  <- LOST' if lost else ''}")
    # The MP4's tracks: each voice as long as the mixture, and the mixture as long as the input's
    # audio within one AAC frame (1024 samples: the encoder pads its last one).
    tracks = audio_tracks_s(mp4)
    mixture_s = tracks.get("mixture", 0.0)
    aac_frame_s = 1024 / 16000
    for title, seconds in tracks.items():
        reference_s, what = (input_audio_s, "the input's audio") if title == "mixture" else (mixture_s, "the mixture")
        short = abs(seconds - reference_s) > (aac_frame_s if title == "mixture" else 0.001)
        lost |= short
        print(f"MP4 track {title}: {seconds:.3f} s ({seconds - reference_s:+.3f} s vs {what})"
              f"{'  <- DIFFERS' if short else ''}")
    # A WAV per tracked face: a face seen for part of the clip has a shorter voice, by design; what must
    # hold is that the renderer wrote all of each voice it received (its closing line, checked below).
    for wav in sorted((out_dir / "voices").glob("voice_*.wav")):
        seconds = soundfile.info(str(wav)).duration
        print(f"WAV {wav.name}: {seconds:.3f} s ({seconds - mixture_s:+.3f} s vs the mixture)")
    summary = [line for line in proc.stdout.splitlines() if re.match(r"\[earshot\] renderer: ", line)]
    print("\n".join(summary))
    for written, received, what in re.findall(r"(\d+(?:\.\d+)?)(?: s)? of (\d+(?:\.\d+)?)( s| frames)",
                                               "".join(summary)):
        if written != received:
            lost = True
            print(f"renderer: wrote {written}{what} of {received}{what} received  <- LOST")
    print("verdict: nothing lost" if not lost else "verdict: something was lost (marked above)")
    if args.keep:
        print(f"outputs kept in {out_dir}")
    else:
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
