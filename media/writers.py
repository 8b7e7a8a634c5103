"""Write what Earshot sees and hears to files: MP4 (H.264 + AAC tracks) and WAV.

Why MP4 with several audio tracks: one file carries the video, the microphone mixture and
one isolated voice per tracked face, so a player (or ``ffprobe``) shows them side by side
and they stay aligned without sidecar files.

Both video and audio are placed on the file's timeline by *time*, not by arrival order:
``write_frame(image, time_s=...)`` and ``write_audio(samples, first_sample=...)`` let the
renderer put a frame and a chunk that were captured at the same instant at the same place,
even when frames were dropped ("latest" policy) or an audio chunk went missing (filled
with silence). Without those arguments frames are consecutive at ``fps`` and audio is
appended.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

#: sample rates AAC encodes natively (MPEG-4 sampling frequency index); others are resampled
AAC_RATES_HZ = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
#: the video stream's time base: the MPEG standard 90 kHz clock, fine enough for any fps
VIDEO_TIME_BASE = Fraction(1, 90000)


class Mp4Writer:
    """H.264 (libx264, yuv420p) video plus ``audio_tracks`` mono AAC tracks in one MP4.

    ``with Mp4Writer("out.mp4", 640, 480, 30) as w: w.write_frame(bgr); w.write_audio(x)``

    ``threads=1`` makes libx264 single-threaded, so the same frames give the same bytes
    (with frame threads x264's output depends on timing); 0 lets it choose.

    yuv420p needs even dimensions: odd ``width``/``height`` are rounded down and frames are
    cropped by that one row/column. Frames of another size are resized (a renderer may
    change its canvas; the file may not).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 sample_rate_hz: int = 16000, audio_tracks: int = 1,
                 audio_titles: list[str] | None = None, crf: int = 23, preset: str = "veryfast",
                 audio_bitrate: int = 64000, threads: int = 0, deterministic: bool = False) -> None:
        import av

        if width < 2 or height < 2:
            raise ValueError(f"Mp4Writer: frame size {width}×{height} is too small")
        if fps <= 0:
            raise ValueError(f"Mp4Writer: fps must be positive, got {fps}")
        if audio_tracks < 0:
            raise ValueError(f"Mp4Writer: audio_tracks must be ≥ 0, got {audio_tracks}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width - width % 2, height - height % 2
        self.fps = Fraction(fps).limit_denominator(1001)
        self.sample_rate_hz = int(sample_rate_hz)
        self.frames_written = 0
        self._closed = False
        self._last_pts = -1

        self._container = av.open(str(self.path), mode="w", format="mp4")
        try:
            self._video = self._container.add_stream("libx264", rate=self.fps)
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = "yuv420p"
            self._video.time_base = VIDEO_TIME_BASE
            self._video.codec_context.time_base = VIDEO_TIME_BASE
            # veryfast + crf 23: real time at 640×480 on a 2-core box with quality to spare.
            self._video.options = {"crf": str(crf), "preset": preset}
            if threads > 0:
                self._video.codec_context.thread_count = threads
            if deterministic:
                # Same frames → same bytes, run after run (exports, the shipped demo). Measured:
                # x264's SIMD paths and frame threads each made identical input encode
                # differently; asm=0 on one thread did not. It costs ~3× encode time.
                self._video.options = {**self._video.options, "x264-params": "asm=0"}
                self._video.codec_context.thread_count = 1

            encode_rate = self.sample_rate_hz if self.sample_rate_hz in AAC_RATES_HZ else 48000
            self._audio: list[_AudioTrack] = []
            for track in range(audio_tracks):
                stream = self._container.add_stream("aac", rate=encode_rate)
                stream.layout = "mono"
                stream.bit_rate = audio_bitrate
                title = (audio_titles[track] if audio_titles and track < len(audio_titles)
                         else ("mixture" if track == 0 else f"voice {track}"))
                stream.metadata["title"] = title
                stream.metadata["handler_name"] = title
                self._audio.append(_AudioTrack(stream, self.sample_rate_hz, encode_rate))
        except Exception:
            self._container.close()
            raise

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def write_frame(self, bgr_uint8: np.ndarray, time_s: float | None = None) -> None:
        """Encode one BGR uint8 frame (H×W×3), at ``time_s`` on the file's timeline if given.

        A frame whose time is not after the previous one's is nudged one tick later, so a
        jittery clock never produces an invalid (non-increasing) timestamp.
        """
        import av

        self._check_open()
        image = np.asarray(bgr_uint8)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"write_frame: expected H×W×3 uint8 BGR, got {image.dtype}{image.shape}")
        if image.shape[:2] != (self.height, self.width):
            if image.shape[0] - self.height in (0, 1) and image.shape[1] - self.width in (0, 1):
                image = image[: self.height, : self.width]
            else:
                import cv2

                image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if time_s is None:
            pts = round(self.frames_written / self.fps / VIDEO_TIME_BASE)
        else:
            pts = round(time_s / VIDEO_TIME_BASE)
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self._container.mux(self._video.encode(frame))
        self.frames_written += 1

    def write_audio(self, samples_float32_mono: np.ndarray, track: int = 0,
                    first_sample: int | None = None) -> None:
        """Append mono float samples to audio ``track``.

        ``first_sample`` (in samples at ``sample_rate_hz`` from the file's time zero) places
        the block: a gap before it is filled with silence, an overlap with what was already
        written is dropped. That keeps every track aligned to the video by time.
        """
        self._check_open()
        if not 0 <= track < len(self._audio):
            raise IndexError(f"write_audio: track {track}, this file has {len(self._audio)} audio track(s)")
        samples = np.asarray(samples_float32_mono, dtype=np.float32)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)
        if samples.ndim != 1:
            raise ValueError(f"write_audio: expected mono samples (n,), got shape {samples.shape}")
        self._container.mux(self._audio[track].write(samples, first_sample))

    def audio_samples_from_input(self, track: int) -> int:
        """Samples of ``track`` that came from the caller: not the silence that filled gaps,
        not what overlapped and was dropped."""
        return self._audio[track].samples_in - self._audio[track].samples_padded

    def close(self) -> None:
        """Flush the encoders and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._video.encode(None))
            for track in self._audio:
                self._container.mux(track.flush())
        finally:
            self._container.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Mp4Writer({self.path}) is closed")


class _AudioTrack:
    """One AAC stream: converts float mono to the encoder's format and frame size.

    ``av.AudioResampler`` with ``frame_size`` does the format change (flt → fltp), any rate
    change and the re-blocking into the 1024-sample frames AAC requires; the pts of every
    encoded frame is set here from the count of samples, so it is exact.
    """

    def __init__(self, stream: Any, input_rate_hz: int, encode_rate_hz: int) -> None:
        import av

        self.stream = stream
        self.input_rate_hz = input_rate_hz
        self.encode_rate_hz = encode_rate_hz
        frame_size = stream.codec_context.frame_size or 1024
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=encode_rate_hz,
                                           frame_size=frame_size)
        self.samples_in = 0  # at input_rate_hz
        self.samples_padded = 0  # of samples_in: silence that filled a gap
        self.samples_out = 0  # at encode_rate_hz

    def write(self, samples: np.ndarray, first_sample: int | None) -> list[Any]:
        if first_sample is not None:
            if first_sample > self.samples_in:
                self.samples_padded += first_sample - self.samples_in
                samples = np.concatenate([np.zeros(first_sample - self.samples_in, np.float32), samples])
            elif first_sample < self.samples_in:
                samples = samples[self.samples_in - first_sample:]
        if samples.size == 0:
            return []
        self.samples_in += samples.size
        return self._encode(self._frame(samples))

    def flush(self) -> list[Any]:
        packets = self._encode(None)
        return packets + list(self.stream.encode(None))

    def _frame(self, samples: np.ndarray) -> Any:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples)[None, :], format="flt", layout="mono")
        frame.sample_rate = self.input_rate_hz
        return frame

    def _encode(self, frame: Any) -> list[Any]:
        packets = []
        for out in self.resampler.resample(frame):
            out.pts = self.samples_out
            out.time_base = Fraction(1, self.encode_rate_hz)
            self.samples_out += out.samples
            packets.extend(self.stream.encode(out))
        return packets


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int, subtype: str = "PCM_16") -> Path:
    """Write mono (n,) or multichannel (n, ch) float samples in [-1, 1] as a WAV file.

    16-bit PCM by default: what every player opens; values beyond ±1 are clipped rather
    than wrapped around.
    """
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    sf.write(str(path), data, int(sample_rate_hz), subtype=subtype)
    return path


class WavWriter:
    """A WAV file written as audio streams in (an isolated voice can last an hour).

    ``first_sample`` places a block like :meth:`Mp4Writer.write_audio` does: gaps become
    silence and overlaps are dropped, so the WAV lines up with the MP4 sample for sample.
    """

    def __init__(self, path: str | Path, sample_rate_hz: int, subtype: str = "PCM_16") -> None:
        import soundfile as sf

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.samples_written = 0
        self.samples_padded = 0  # of samples_written: silence that filled a gap
        self._file = sf.SoundFile(str(self.path), mode="w", samplerate=int(sample_rate_hz), channels=1,
                                  subtype=subtype)

    def write(self, samples: np.ndarray, first_sample: int | None = None) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if first_sample is not None:
            if first_sample > self.samples_written:
                self._file.write(np.zeros(first_sample - self.samples_written, np.float32))
                self.samples_padded += first_sample - self.samples_written
                self.samples_written = first_sample
            elif first_sample < self.samples_written:
                samples = samples[self.samples_written - first_sample:]
        self._file.write(np.clip(samples, -1.0, 1.0))
        self.samples_written += samples.size

    @property
    def samples_from_input(self) -> int:
        """Samples that came from the caller (not gap-filling silence, not dropped overlaps)."""
        return self.samples_written - self.samples_padded

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
