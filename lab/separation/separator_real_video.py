"""Voice isolation on a real video, with proxies that need no ground truth.

    python -m lab.separation.separator_real_video [--video ../shared/data/video/two_speakers_split_screen.mp4]

Runs the live path offline — the real-face front end (`engines/faces/mesh_lip_front_end.py`: detector,
tracker, face mesh, lip encoder) on every frame, the shipped separator ONNX one 10 ms hop at a time with
each face's latest lip embedding, as the separator node holds it — writes ``voice_<track>.wav`` per face (and the
mixture) to ``--out``, and prints, per face track, how its output's loudness over time correlates
with its own face's lip motion and with the other faces' (Pearson r of 25 fps envelopes; lip motion =
the mean absolute frame-to-frame change of the face's aligned 32×48 mouth crop, smoothed over 5 frames —
a measure that uses no learned model). A working AV separator
shows own > other; a separator that ignores faces shows them equal. Last, each output's blind SNR
estimate against the mixture's (`snr_estimate_db`): on the one-speaker restaurant clip, how much of the
crowd the voice lost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lab.corpus.audio import SAMPLES_PER_FRAME, resample
from lab.corpus.data_paths import data_root
from engines.dsp import stft
from engines.faces.mesh_lip_front_end import MeshLipFrontEnd
from engines.separation.streaming_separator import StreamingSeparator
from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND
from lab.separation.separation_samples import video_frame_of_stft_frame

DEFAULT_VIDEO = data_root() / "video" / "two_speakers_split_screen.mp4"


def read_video(path: Path, width: int = 640) -> tuple[list[np.ndarray], np.ndarray]:
    """BGR frames resized to ``width`` and the mono 16 kHz soundtrack."""
    import av
    import cv2

    frames, audio, rate = [], [], 16000
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            img = frame.to_ndarray(format="bgr24")
            frames.append(cv2.resize(img, (width, int(round(img.shape[0] * width / img.shape[1])))))
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            a = frame.to_ndarray()
            channels = len(frame.layout.channels)
            audio.append(a.mean(axis=0) if frame.format.is_planar else a.reshape(-1, channels).mean(axis=1))
            rate = frame.sample_rate
    return frames, resample(np.concatenate(audio).astype(np.float32), rate)


def separate_video(frames: list[np.ndarray], audio: np.ndarray, engine: StreamingSeparator,
                   front_end: MeshLipFrontEnd | None = None):
    """Returns (per-track output audio, per-track lip motion per video frame, per-track boxes per frame)."""
    front_end = front_end or MeshLipFrontEnd()
    per_frame, crops = [], []
    for f in frames:
        per_frame.append(front_end.process(f))
        lips = getattr(front_end, "last_lips", None)  # (the legacy front end keeps no crops: no motion then)
        seen = lips[:, -1] > 0 if lips is not None and len(lips) else np.zeros(0, bool)
        crops.append([c if ok else None for c, ok in zip(getattr(front_end, "last_crops", []), seen)])
    spec = stft(audio)
    video_index = np.minimum(video_frame_of_stft_frame(len(spec)), len(frames) - 1)
    tracks = sorted({int(t) for f in per_frame for t in f.track_ids})
    voices = {t: np.zeros(len(audio), np.float32) for t in tracks}
    motion = {t: np.full(len(frames), np.nan, np.float32) for t in tracks}
    boxes = {t: np.full((len(frames), 4), np.nan, np.float32) for t in tracks}
    last: dict[int, np.ndarray | None] = {}
    for i, f in enumerate(per_frame):
        for k, t in enumerate(f.track_ids):
            t = int(t)
            boxes[t][i] = f.boxes[k]
            c = crops[i][k] if k < len(crops[i]) else None
            if c is not None and last.get(t) is not None:  # mean absolute change of the aligned mouth crop
                motion[t][i] = float(np.mean(np.abs(c - last[t])))
            last[t] = c
    end = 0
    for j in range(len(spec)):
        f = per_frame[video_index[j]]
        ids, out = engine.push(spec[j:j + 1], {int(t): row for t, row in zip(f.track_ids, f.lip_features)})
        end = (j + 1) * 160 + engine.stft.left
        for t, samples in zip(ids, out):
            start = end - len(samples)
            voices[int(t)][max(0, start):end] = samples[max(0, -start):][: len(audio) - max(0, start)]
    return voices, motion, boxes


def envelope_db(x: np.ndarray, n_frames: int) -> np.ndarray:
    e = np.array([np.mean(x[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME] ** 2) for i in range(n_frames)])
    return 10 * np.log10(e + 1e-10)


def snr_estimate_db(x: np.ndarray, frame: int = 640) -> float:
    """A blind SNR estimate of a recording with one talker over steady noise (no clean reference exists for
    a real clip): 40 ms frame powers; noise power N = their 10th percentile (the pauses between words);
    speech-plus-noise = the mean power of the frames above the median; SNR = 10 log10((S+N − N) / N).
    Crowd noise that is itself speech-like biases it, the same way for the mixture and the output, so
    the *difference* (output − mixture) is what is reported: how much the crowd fell relative to the voice."""
    n = len(x) // frame
    p = np.mean(x[:n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12
    noise = np.percentile(p, 10)
    loud = p[p > np.median(p)].mean()
    return float(10 * np.log10(max(loud - noise, 1e-12) / noise))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 10:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def smooth(x: np.ndarray, n: int = 5) -> np.ndarray:
    """Moving average ignoring NaN (lip motion is spiky frame to frame; speech energy is syllabic)."""
    v = np.nan_to_num(x)
    w = (~np.isnan(x)).astype(np.float32)
    k = np.ones(n) / n
    out = np.convolve(v, k, "same") / np.maximum(np.convolve(w, k, "same"), 1e-6)
    out[np.convolve(w, k, "same") < 0.5 / n] = np.nan
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.separation.separator_real_video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    p.add_argument("--out", type=Path, default=Path("out/separation/real_video"))
    p.add_argument("--blend", type=float, default=AUDIO_ONLY_BLEND,
                   help="two faces: the audio-only voices' share of their masks (the engine's; 0: the AV masks alone)")
    p.add_argument("--min-presence", type=float, default=0.5, help="report tracks seen in this share of frames")
    args = p.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"SHARED DATA MISSING: {args.video} (set EARSHOT_DATA)")
    import soundfile as sf

    frames, audio = read_video(args.video)
    engine = StreamingSeparator.from_registry(backend="onnxruntime", blend=args.blend)
    voices, motion, boxes = separate_video(frames, audio, engine)
    found = {t: int(np.sum(~np.isnan(b[:, 0]))) for t, b in boxes.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    sf.write(args.out / "mixture.wav", audio, 16000)
    main_tracks = [t for t in voices if found[t] >= args.min_presence * len(frames)]
    n = len(frames)
    env = {t: envelope_db(voices[t], n) for t in main_tracks}
    mix_env = envelope_db(audio, n)
    print(f"{args.video.name}: {n} frames, {len(audio) / 16000:.1f} s; tracks seen: "
          + ", ".join(f"{t} ({found[t]} frames)" for t in sorted(voices)))
    print(f"{'track':>5} {'frames':>6} {'out/mix dB':>10} {'r(own lips)':>11} {'r(other lips)':>13} {'r(mix, own lips)':>16}")
    for t in main_tracks:
        sf.write(args.out / f"voice_{t}.wav", voices[t], 16000)
        own = smooth(motion[t])
        others = [smooth(motion[o]) for o in main_tracks if o != t]
        other_r = np.nanmean([_corr(env[t], o) for o in others]) if others else float("nan")
        gain = 10 * np.log10(np.sum(voices[t] ** 2) / (np.sum(audio ** 2) + 1e-12) + 1e-12)
        print(f"{t:>5} {found[t]:>6} {gain:>10.1f} {_corr(env[t], own):>11.3f} {other_r:>13.3f} {_corr(mix_env, own):>16.3f}")
    mix_snr = snr_estimate_db(audio)
    print(f"estimated SNR (`snr_estimate_db`): mixture {mix_snr:.1f} dB; "
          + ", ".join(f"voice {t} {snr_estimate_db(voices[t]):.1f} dB (gain {snr_estimate_db(voices[t]) - mix_snr:+.1f})"
                      for t in main_tracks))
    print(f"wrote {args.out}/voice_<track>.wav and mixture.wav")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
