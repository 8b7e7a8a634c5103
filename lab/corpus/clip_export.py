"""Write a clip to files: ``<name>.mp4`` (H.264 + AAC mixture), ``<name>_src<k>.wav`` (clean
sources), ``<name>_mixture.wav`` (the exact float mixture, 16-bit) and ``<name>.json`` (ground truth).

WAVs are written beside the MP4 because AAC is lossy: a test or metric that needs the exact
mixture = sum of sources must read the WAVs, not decode the MP4.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.corpus.audio import FPS, SAMPLE_RATE_HZ
from lab.corpus.clip import Clip


def export_clip(clip: Clip, folder: str | Path, name: str, wav_sources: bool = True,
                sample_rate_hz: int = SAMPLE_RATE_HZ) -> dict[str, Path]:
    """Write the clip's files and return their paths by role."""
    from media.writers import Mp4Writer, write_wav

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = clip.frames.shape[1:3]
    paths: dict[str, Path] = {"mp4": folder / f"{name}.mp4", "json": folder / f"{name}.json"}
    with Mp4Writer(paths["mp4"], w, h, FPS, sample_rate_hz=sample_rate_hz, audio_tracks=1,
                   audio_titles=["mixture"], deterministic=True) as writer:
        for frame in clip.frames:
            writer.write_frame(frame)
        writer.write_audio(clip.mixture)
    if wav_sources:
        paths["mixture_wav"] = write_wav(folder / f"{name}_mixture.wav", clip.mixture, SAMPLE_RATE_HZ)
        for k, src in enumerate(clip.sources):
            paths[f"src{k}_wav"] = write_wav(folder / f"{name}_src{k}.wav", src, SAMPLE_RATE_HZ)
    ann = clip.annotation()
    ann["files"] = {role: p.name for role, p in paths.items() if role != "json"}
    paths["json"].write_text(json.dumps(ann, indent=1) + "\n")
    return paths

