"""The sink interface: the renderer opens only what its config asks for, sinks fan out as one,
close() reports only files that exist, and the files' clock places audio by sample count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.sinks import MIXTURE, DrawnFrame, Mp4Sink, Sink, Sinks, WavSink
from media.timeline import Timeline
from nodes.renderer import Renderer
from pipeline.harness import Harness

SR = 16000


@pytest.mark.parametrize("params, opened", [
    ({}, []),
    ({"mp4_path": "x.mp4"}, ["mp4", "record"]),  # the per-frame record comes with the MP4
    ({"wav_dir": "voices", "web_port": 0}, ["wav", "web"]),
    ({"window": True}, []),  # no display here: left out, with a note
])
def test_the_renderer_opens_only_the_sinks_its_config_asks_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               params: dict, opened: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with Harness(Renderer, params) as h:
        assert list(h.node.sinks.members) == opened
        assert [a.startswith("http://") for a in h.node.artifacts] == [True] * ("web" in opened)
    assert not (tmp_path / "x.mp4").exists()  # no frame came: the MP4 is never created
    assert not (tmp_path / "x.jsonl").exists()  # nor the record


def frame(value: int = 90, time_s: float | None = None) -> DrawnFrame:
    return DrawnFrame(np.full((48, 64, 3), value, np.uint8), time_s)


def test_close_returns_only_files_that_exist_and_only_once(tmp_path: Path) -> None:
    audio_only = Mp4Sink(tmp_path / "no_video.mp4", 25.0, SR, voice_tracks=0)
    audio_only.audio({MIXTURE: np.zeros(160, np.float32)}, 0)
    assert audio_only.close() == [] and not (tmp_path / "no_video.mp4").exists()

    mp4 = Mp4Sink(tmp_path / "v.mp4", 25.0, SR, voice_tracks=1)
    for i in range(5):
        mp4.video(frame(time_s=i / 25))
    mp4.audio({MIXTURE: np.zeros(1600, np.float32), "voice_4": np.zeros(1600, np.float32)}, 0)
    assert mp4.close() == [tmp_path / "v.mp4"] and mp4.close() == []
    assert mp4.stats()["frames_written"] == 5 and mp4.stats()["audio_s_written.voice_4"] == 0.1

    wav = WavSink(tmp_path / "voices", SR)
    wav.audio({MIXTURE: np.ones(160, np.float32), "voice_4": np.ones(160, np.float32)}, 0)
    written = wav.close()
    assert sorted(p.name for p in written) == ["voice_4.wav", "voices.json"]  # the mixture has no WAV
    assert all(p.exists() for p in written) and wav.close() == []


def test_written_seconds_leave_out_the_silence_that_fills_a_gap(tmp_path: Path) -> None:
    wav = WavSink(tmp_path, SR)
    wav.audio({"voice_1": np.ones(1600, np.float32)}, first_sample=SR)  # the voice starts 1 s in
    wav.audio({"voice_1": np.ones(1600, np.float32)}, first_sample=SR + 800)  # half overlaps: dropped
    assert wav.stats() == {"audio_s_written.voice_1": 0.15}
    wav.close()
    assert wav.wavs["voice_1"].samples_written == SR + 2400


class Recorder(Sink):
    def __init__(self, name: str, works: bool = True, fails_to_close: bool = False) -> None:
        self.name, self.works, self.fails_to_close = name, works, fails_to_close
        self.calls: list[str] = []

    def open(self) -> bool:
        return self.works

    def video(self, frame: DrawnFrame) -> None:
        self.calls.append("video")

    def audio(self, tracks, first_sample: int) -> None:
        self.calls.append(f"audio {sorted(tracks)} @{first_sample}")

    def close(self) -> list[Path]:
        self.calls.append("close")
        if self.fails_to_close:
            raise OSError("disk full")
        return []

    def stats(self) -> dict[str, float]:
        return {"calls": len(self.calls)}


def test_sinks_fan_out_count_what_they_were_given_and_close_every_sink() -> None:
    a, b, absent = Recorder("a", fails_to_close=True), Recorder("b"), Recorder("absent", works=False)
    sinks = Sinks(SR)
    assert [sinks.add(s) for s in (a, None, absent, b)] == [True, False, False, True]
    assert "absent" not in sinks and sinks["b"] is b
    sinks.video(frame())
    sinks.audio({MIXTURE: np.zeros(8000, np.float32)}, 160)
    assert a.calls == b.calls == ["video", f"audio ['{MIXTURE}'] @160"] and absent.calls == []
    assert sinks.stats() == {"frames_received": 1, "audio_s_received.mixture": 0.5, "a.calls": 2, "b.calls": 2}
    with pytest.raises(OSError, match="disk full"):
        sinks.close()
    assert b.calls[-1] == "close"  # a failed to close, b was still closed


def test_the_timeline_starts_at_the_epoch_and_places_audio_by_sample_count() -> None:
    epoch = 5_000_000_000
    timeline = Timeline(SR, lambda: epoch)
    assert timeline.seconds(epoch + 40_000_000) == pytest.approx(0.04)
    assert timeline.seconds(0) is None  # unstamped
    assert timeline.place("audio", epoch + 1_000_000_000, first_sample=0) == SR  # anchored by capture time
    # later blocks follow their sample count, whatever jitter their capture stamps carry
    assert timeline.place("audio", epoch + 1_013_000_000, first_sample=160) == SR + 160
    assert timeline.place("voices", epoch + 500_000_000, first_sample=320) == SR // 2


def test_summary_says_what_was_written_of_what_arrived(tmp_path: Path) -> None:
    sinks = Sinks(SR)
    sinks.add(WavSink(tmp_path, SR))
    sinks.audio({"voice_1": np.ones(SR, np.float32)}, first_sample=0)
    sinks.audio({"voice_1": np.ones(SR // 2, np.float32)}, first_sample=SR // 4)  # overlaps: not written
    assert sinks.summary() == "voice_1 1.0 s of 1.5 s"
    sinks.close()
