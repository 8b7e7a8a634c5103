"""Real-video check: does the heatmap's peak fall on a speaker's face?

Runs the shipped ONNX graphs through the engine layer frame by frame, as the live nodes do (frame +
previous frame, the second of audio up to the end of the frame), and CenterFace
(`engines.faces.detector`) for face boxes. Needs ../shared/data/video.

"Frames with speech" come from a plain energy detector, not a labelled track: the frame's audio
(the 200 ms up to its end, 300–3400 Hz) is at least ``SPEECH_MARGIN_DB`` above the clip's 10th
percentile. On the noisy restaurant clip this keeps the voiced stretches and drops the pauses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ
from engines.localization.localizer_inputs import resize_frame, window_logmel

RESTAURANT = "one_speaker_noisy_restaurant.mp4"
SPLIT_SCREEN = "two_speakers_split_screen.mp4"
SPEECH_MARGIN_DB = 10.0


@dataclass
class Decoded:
    frames: list[np.ndarray]  # BGR
    times_s: np.ndarray       # presentation time of each frame
    fps: float
    audio: np.ndarray         # mono 16 kHz


def decode(path: Path) -> Decoded:
    import av

    frames, times = [], []
    chunks = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)  # libswresample
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate)
        for frame in container.decode(vstream):
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.pts * frame.time_base))
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32)
    t = np.asarray(times)
    return Decoded(frames, t - t[0], fps, audio)


def speech_frames(audio: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per frame: is the 200 ms of audio before ``ends`` (sample indices) voiced-band loud?"""
    spec = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE_HZ)
    band = np.fft.irfft(np.where((freqs > 300) & (freqs < 3400), spec, 0), n=len(audio))
    win = SAMPLE_RATE_HZ // 5
    energy = np.array([10 * np.log10(np.mean(band[max(0, e - win):e] ** 2) + 1e-10) for e in ends])
    return energy >= np.percentile(energy, 10) + SPEECH_MARGIN_DB


def heatmap_peaks(video: Decoded, threads: int = 2, model=None) -> list[tuple[int, int]]:
    """(x, y) of each frame's heatmap maximum, in frame pixels.

    ``model``: a torch `Localizer` to check instead of the shipped ONNX graphs (a training run's
    weights, before they are shipped).
    """
    if model is None:
        from engines.loader import load

        visual, audio_enc, fusion = (load(f"localizer_{p}", backend="onnxruntime", threads=threads)
                                     for p in ("visual", "audio", "fusion"))
    peaks, previous = [], None
    for frame, t in zip(video.frames, video.times_s):
        image = resize_frame(frame).transpose(2, 0, 1)[None].astype(np.float32)
        prev = image if previous is None else previous
        previous = image
        end = int(round((t + 1 / video.fps) * SAMPLE_RATE_HZ))
        logmel = window_logmel(video.audio[:end])[None]
        if model is not None:
            import torch

            with torch.inference_mode():
                heat = model(torch.from_numpy(image), torch.from_numpy(prev),
                             torch.from_numpy(logmel))["cosine"][0].numpy()
        else:
            features = visual.run({"image": image, "previous": prev})["features"]
            embedding = audio_enc.run({"logmel": logmel})["embedding"]
            heat = fusion.run({"features": features, "embedding": embedding})["cosine"][0]  # same peak, no ties
        peaks.append(peak_xy(heat, frame.shape[1], frame.shape[0]))
    return peaks


def peak_xy(heat: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """(x, y) in frame pixels of a map's maximum after bicubic upsampling to the frame."""
    up = cv2.resize(heat, (width, height), interpolation=cv2.INTER_CUBIC)
    y, x = np.unravel_index(int(np.argmax(up)), up.shape)
    return int(x), int(y)


def faces(video: Decoded) -> list[np.ndarray]:
    from engines.faces.detector import FaceDetector

    detector = FaceDetector(max_side_px=640, num_threads=2)
    return [detector.detect(f).boxes for f in video.frames]


#: CenterFace boxes are tight (brow to chin) while a 14×14 map cell of a 720p frame is 91 × 51 px:
#: the "head" figure also counts a peak within the box grown by a quarter of its size on each side
HEAD_MARGIN = 0.25


def inside(p: tuple[int, int], box: np.ndarray, margin: float = 0.0) -> bool:
    mx, my = margin * (box[2] - box[0]), margin * (box[3] - box[1])
    return bool(box[0] - mx <= p[0] <= box[2] + mx and box[1] - my <= p[1] <= box[3] + my)


def report(root: Path | None = None, model=None) -> list[str]:
    from lab.corpus.data_paths import require_data

    folder = root or require_data("video")
    lines = []
    video = decode(folder / RESTAURANT)
    ends = np.round((video.times_s + 1 / video.fps) * SAMPLE_RATE_HZ).astype(int)
    speech = speech_frames(video.audio, ends)
    peaks, boxes = heatmap_peaks(video, model=model), faces(video)
    has_face = np.array([len(b) > 0 for b in boxes])
    sel = speech & has_face
    lines.append(f"Real video {RESTAURANT}: {len(peaks)} frames, {int(speech.sum())} with speech "
                 f"(energy detector), face found in {int(has_face.sum())}.")
    for label, margin in (("face box", 0.0), (f"head (box +{HEAD_MARGIN:.0%} each side)", HEAD_MARGIN)):
        on = np.array([any(inside(p, b, margin) for b in bx) for p, bx in zip(peaks, boxes)])
        lines.append(f"  heatmap peak on the speaker's {label}: {on[sel].mean():.1%} of speech frames with a face "
                     f"({int(on[sel].sum())}/{int(sel.sum())}); all frames with a face: {on[has_face].mean():.1%}")

    video = decode(folder / SPLIT_SCREEN)
    peaks, boxes = heatmap_peaks(video, model=model), faces(video)
    width = video.frames[0].shape[1]
    n = len(peaks)
    two = sum(len(b) >= 2 for b in boxes)
    lines.append(f"Real video {SPLIT_SCREEN}: {n} frames (2 faces detected in {two}).")
    for label, margin in (("face box", 0.0), ("head", HEAD_MARGIN)):
        counts = {"left": 0, "right": 0, "neither": 0}
        for p, bx in zip(peaks, boxes):
            hit = [b for b in bx if inside(p, b, margin)]
            if not hit:
                counts["neither"] += 1
            else:
                counts["left" if (hit[0][0] + hit[0][2]) / 2 < width / 2 else "right"] += 1
        lines.append(f"  heatmap peak on a {label}: " + ", ".join(f"{k} {v / n:.1%}" for k, v in counts.items()))
    return lines
