"""MP4/WAV writers: decode what was written and check it is what was meant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.writers import Mp4Writer, write_wav

SR = 16000


def chirp(seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * (200 * t + 400 * t**2))).astype(np.float32)


def decode_audio(path: Path, index: int) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=index)])


def best_lag_and_correlation(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 200) -> tuple[int, float]:
    a = decoded[2000:30000]
    b = reference[2000 - max_lag:30000 + max_lag]
    cc = np.correlate(a, b, "valid")
    k = int(np.argmax(cc))
    corr = cc[k] / np.sqrt((a**2).sum() * (b[k:k + a.size] ** 2).sum())
    return max_lag - k, float(corr)


def test_mp4_frames_duration_tracks_and_audio_content(tmp_path: Path) -> None:
    import av

    path = tmp_path / "out.mp4"
    mixture, voice = chirp(2.0), chirp(2.0, amp=0.1)[::-1].copy()
    with Mp4Writer(path, 160, 120, 25, sample_rate_hz=SR, audio_tracks=2) as w:
        for i in range(50):
            w.write_frame(np.full((120, 160, 3), i * 5, np.uint8))
        for k in range(0, mixture.size, 333):  # odd block size: the writer re-blocks to 1024
            w.write_audio(mixture[k:k + 333], track=0)
        w.write_audio(voice, track=1)

    with av.open(str(path)) as c:
        video = c.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == (160, 120)
        assert len(c.streams.audio) == 2
        assert [s.codec_context.name for s in c.streams.audio] == ["aac", "aac"]
        assert [s.metadata.get("title") or s.metadata.get("handler_name") for s in c.streams.audio] == \
            ["mixture", "voice 1"]
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        assert c.duration / 1e6 == pytest.approx(2.0, abs=0.1)
    assert len(frames) == 50
    # swscale's fast BGR → yuv420p → BGR rounding moves a flat grey by a few levels
    assert abs(float(frames[10].mean()) - 50) < 6 and abs(float(frames[40].mean()) - 200) < 6

    for index, reference in ((0, mixture), (1, voice)):
        decoded = decode_audio(path, index)
        assert decoded.size == pytest.approx(reference.size, abs=1024)
        lag, corr = best_lag_and_correlation(decoded, reference)
        assert lag == 0, f"track {index} is shifted by {lag} samples"
        assert corr > 0.98


def test_audio_and_video_are_placed_by_time(tmp_path: Path) -> None:
    """Gaps are filled with silence, overlaps dropped, frames land at time_s."""
    import av

    path = tmp_path / "timed.mp4"
    tone = chirp(0.5)
    with Mp4Writer(path, 64, 48, 10, sample_rate_hz=SR) as w:
        w.write_frame(np.zeros((48, 64, 3), np.uint8), time_s=0.0)
        w.write_frame(np.zeros((48, 64, 3), np.uint8), time_s=0.5)   # a dropped frame in between
        w.write_frame(np.zeros((48, 64, 3), np.uint8), time_s=0.5)   # same time: nudged, not invalid
        w.write_audio(tone, first_sample=SR)                        # 1 s of silence first
        w.write_audio(tone[:100], first_sample=SR + 50)             # overlap: dropped
    with av.open(str(path)) as c:
        pts_s = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert pts_s[:2] == [0.0, 0.5] and pts_s[2] > 0.5
    audio = decode_audio(path, 0)
    assert np.abs(audio[: SR - 1100]).max() < 1e-3
    assert np.abs(audio[SR + 200: SR + 4000]).max() > 0.2
    assert audio.size == pytest.approx(1.5 * SR, abs=1024)


def test_odd_sizes_and_resizing_and_other_rates(tmp_path: Path) -> None:
    import av

    path = tmp_path / "odd.mp4"
    with Mp4Writer(path, 101, 77, 30, sample_rate_hz=11111, audio_tracks=1) as w:  # 11111 Hz: not an AAC rate
        w.write_frame(np.zeros((77, 101, 3), np.uint8))
        w.write_frame(np.zeros((200, 300, 3), np.uint8))
        w.write_audio(np.zeros(11111, np.float32))
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (100, 76)
        assert c.streams.audio[0].rate == 48000
        assert len(list(c.decode(video=0))) == 2
    with pytest.raises(ValueError, match="closed"):
        w.write_frame(np.zeros((76, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Mp4Writer(tmp_path / "x.mp4", 10, 10, 5).write_frame(np.zeros((10, 10), np.float32))


def test_write_wav_roundtrip(tmp_path: Path) -> None:
    import soundfile as sf

    x = chirp(0.25) * 4  # beyond ±1: clipped, not wrapped
    path = write_wav(tmp_path / "sub" / "v.wav", x, SR)
    y, sr = sf.read(str(path), dtype="float32")
    assert sr == SR and y.shape == x.shape
    assert np.abs(y - np.clip(x, -1, 1)).max() < 1e-4
