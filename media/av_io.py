"""Reading media files and streams with PyAV: video frames with their times, audio as 16 kHz chunks.

Why PyAV and not OpenCV for files: PyAV gives each frame its presentation time (so a file
source can be paced to the file's own clock, and audio and video line up) and decodes the
audio track, which OpenCV cannot. OpenCV stays the tool for camera devices (see nodes/camera.py).

Both readers are plain generators: a node pulls one item per ``step()`` and closes the
generator (which closes the container) when it is done.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MediaError(RuntimeError):
    """A file or stream that cannot be opened or decoded; the message names it."""


def _open(source: str | Path, what: str):  # -> av.container.InputContainer
    import av

    try:
        return av.open(str(source), mode="r", timeout=10.0)
    except (av.FFmpegError, OSError) as exc:  # FileNotFoundError is an av error and an OSError
        # strerror alone: FFmpeg's str() repeats the errno and the path
        raise MediaError(f"{source}: cannot open as {what}: {getattr(exc, 'strerror', None) or exc}") from None


class _Primed(Iterator):
    """A reader with its first item decoded when it is made, so a file whose stream opens but does
    not decode (cut, corrupt) fails at open, not once the graph runs; an empty stream fails too.
    ``close()`` closes the file, as closing the reader's generator does."""

    def __init__(self, items: Iterator, source: str | Path, what: str) -> None:
        self.items = items
        try:
            self.first = [next(items)]
        except StopIteration:
            raise MediaError(f"{source}: its {what} stream holds nothing that decodes") from None

    def __next__(self):  # noqa: ANN204 (the reader's item)
        return self.first.pop() if self.first else next(self.items)

    def close(self) -> None:
        self.first.clear()
        self.items.close()


def fit_size(width: int, height: int, src_width: int, src_height: int) -> tuple[int, int]:
    """The output size for a requested ``width``×``height`` where 0 means "keep the
    aspect ratio" (one side given) or "native" (both 0). Even sizes, since codecs want them."""
    if width and height:
        return width, height
    if width:
        return width, max(2, round(src_height * width / src_width / 2) * 2)
    if height:
        return max(2, round(src_width * height / src_height / 2) * 2), height
    return src_width, src_height


def video_frames(source: str | Path, width: int = 0, height: int = 0) -> Iterator[tuple[np.ndarray, float]]:
    """Open ``source`` and decode its first frame now (raising :class:`MediaError` if it cannot
    be read, naming the file first) and return an
    iterator of ``(image, pts_s)``: BGR uint8 H×W×3, scaled by FFmpeg's swscale when a size
    is asked, and the presentation time in seconds from the stream's first frame."""
    container = _open(source, "video")
    if not container.streams.video:
        container.close()
        raise MediaError(f"{source}: no video stream")
    return _Primed(_decode_video(container, str(source), width, height), source, "video")


def _decode_video(container, source: str, width: int, height: int) -> Iterator[tuple[np.ndarray, float]]:
    import av

    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding 1080p on one core is too slow
        start_s: float | None = None
        last_s = 0.0
        for frame in container.decode(stream):
            w, h = fit_size(width, height, frame.width, frame.height)
            image = frame.to_ndarray(format="bgr24", width=w, height=h)
            time_s = frame.time if frame.time is not None else last_s  # a few streams omit pts
            start_s = time_s if start_s is None else start_s
            last_s = time_s
            yield image, time_s - start_s
    except av.FFmpegError as exc:
        raise MediaError(f"{source}: decoding video failed: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        container.close()


def audio_chunks(source: str | Path, sample_rate_hz: int = 16000, chunk_samples: int = 160) -> Iterator[np.ndarray]:
    """Open ``source`` and decode its first chunk now (or raise :class:`MediaError`) and return
    an iterator of mono float32 chunks of exactly
    ``chunk_samples`` at ``sample_rate_hz`` (the last one may be shorter), so downstream nodes
    see one format only. ``av.AudioResampler`` resamples; channels are averaged here, since
    FFmpeg's own stereo downmix adds L and R at −3 dB and makes a centred voice 3 dB louder."""
    container = _open(source, "audio")
    if not container.streams.audio:
        container.close()
        raise MediaError(f"{source}: no audio stream")
    return _Primed(_decode_audio(container, str(source), sample_rate_hz, chunk_samples), source, "audio")


def _decode_audio(container, source: str, sample_rate_hz: int, chunk_samples: int) -> Iterator[np.ndarray]:
    import av

    try:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate_hz)  # planar: (channels, n)
        pending = np.zeros(0, np.float32)
        frames = container.decode(stream)
        for frame in itertools.chain(frames, [None]):  # None flushes the resampler's tail
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().mean(axis=0, dtype=np.float32)])
            n_full = len(pending) // chunk_samples * chunk_samples
            for start in range(0, n_full, chunk_samples):
                yield pending[start:start + chunk_samples].copy()
            pending = pending[n_full:]
        if len(pending):
            yield pending
    except av.FFmpegError as exc:
        raise MediaError(f"{source}: decoding audio failed: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        container.close()


def audio_from(source: str | Path, start_s: float, sample_rate_hz: int = 16000) -> np.ndarray:
    """A file's whole audio, mono float32 at ``sample_rate_hz``, with sample 0 at media time
    ``start_s`` (silence before the audio starts, or the audio before it cut), so it lines up with
    a video frame's time the way the live camera and microphone line up on one clock. Channels are
    averaged, as `audio_chunks` does. No audio stream: an empty array."""
    import av

    with av.open(str(source)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate_hz)
        pieces, first_s = [], None
        for frame in itertools.chain(container.decode(audio=0), [None]):  # None flushes the resampler
            if frame is not None and first_s is None and frame.time is not None:
                first_s = float(frame.time)
            pieces.extend(out.to_ndarray().mean(axis=0, dtype=np.float32) for out in resampler.resample(frame))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    shift = int(round(((first_s or 0.0) - start_s) * sample_rate_hz))
    return np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0 else audio[-shift:]


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, as far as Earshot reads it."""

    has_video: bool
    has_audio: bool


def probe(source: str | Path) -> MediaInfo:
    """Open ``source`` and decode the first frame of its first video and audio streams, so a
    file that would fail a node fails here instead, before a graph starts. Raises
    :class:`MediaError` for a file that cannot be opened or whose streams do not decode."""
    import av

    try:
        container = av.open(str(source), mode="r", timeout=10.0)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot open {str(source)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        info = MediaInfo(has_video=bool(container.streams.video), has_audio=bool(container.streams.audio))
        undecoded = {stream.index: stream.type for stream in streams}
        for packet in container.demux(streams):
            if packet.stream.index in undecoded and packet.decode():
                del undecoded[packet.stream.index]
                if not undecoded:
                    break
    except av.FFmpegError as exc:
        raise MediaError(f"decoding {str(source)!r} failed: {exc}") from None
    finally:
        container.close()
    if undecoded:
        raise MediaError(f"{str(source)!r}: its {' and '.join(undecoded.values())} stream does not decode")
    return info
