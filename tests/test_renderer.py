"""Renderer through the harness: a valid MP4 with aligned audio, and overlays really drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media import overlay
from nodes.renderer import Renderer
from pipeline.harness import Harness
from pipeline.messages import AudioChunk, FaceTracks, Heatmap, SeparatedAudio, VideoFrame

SR = 16000
FPS = 25
W, H = 160, 120


def frame(i: int, epoch_ns: int, value: int = 90) -> VideoFrame:
    return VideoFrame(image=np.full((H, W, 3), value, np.uint8), frame_index=i,
                      capture_ns=epoch_ns + i * 1_000_000_000 // FPS)


def tone(n: int, start: int, hz: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * (start + np.arange(n)) / SR)).astype(np.float32)


def feed_clip(h: Harness, seconds: float = 1.0, voices: bool = False, frame_value: int = 90) -> None:
    """Interleave 10 ms audio chunks and 25 fps frames in capture order, as a live graph would."""
    chunk = SR // 100
    n_frames = int(seconds * FPS)
    f = 0
    for k in range(int(seconds * 100)):
        start = k * chunk
        capture = h.epoch_ns + start * 1_000_000_000 // SR
        h.feed("audio", AudioChunk(samples=tone(chunk, start, 440), first_sample=start, capture_ns=capture))
        if voices:
            h.feed("voices", SeparatedAudio(
                samples=np.stack([tone(chunk, start, 300, 0.2), np.zeros(chunk, np.float32)]),
                track_ids=np.array([7, 9]), first_sample=start, capture_ns=capture))
        while f < n_frames and f * SR // FPS <= start:
            h.feed("video", frame(f, h.epoch_ns, frame_value))
            f += 1


def test_writes_valid_mp4_with_mixture_and_voice_tracks(tmp_path: Path) -> None:
    import av
    import soundfile as sf

    mp4 = tmp_path / "out" / "render.mp4"
    params = {"mp4_path": str(mp4), "wav_dir": str(tmp_path / "wavs"), "fps": float(FPS), "voice_tracks": 2}
    with Harness(Renderer, params) as h:
        feed_clip(h, 1.0, voices=True)
        h.end()
        assert str(mp4.resolve()) in h.node.artifacts
    with av.open(str(mp4)) as c:
        assert len(c.streams.audio) == 3
        assert c.streams.video[0].width == W
        n_video = len(list(c.decode(video=0)))
    assert n_video == FPS
    with av.open(str(mp4)) as c:
        mixture = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    with av.open(str(mp4)) as c:
        voice = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=1)])
    with av.open(str(mp4)) as c:
        silent = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=2)])
    assert mixture.size == pytest.approx(SR, abs=1024)
    # the mixture is the 440 Hz tone, in place (starts at file time 0)
    ref = tone(SR, 0, 440)
    assert np.corrcoef(mixture[2000:14000], ref[2000:14000])[0, 1] > 0.98
    spectrum = np.abs(np.fft.rfft(voice[2000:14000]))
    assert np.argmax(spectrum) * SR / 12000 == pytest.approx(300, abs=3)
    assert np.abs(silent).max() < 1e-3
    wav, sr = sf.read(str(tmp_path / "wavs" / "voice_7.wav"), dtype="float32")
    assert sr == SR and wav.size == SR
    assert (tmp_path / "wavs" / "voice_9.wav").exists()


def test_audio_before_first_frame_is_kept(tmp_path: Path) -> None:
    import av

    mp4 = tmp_path / "late_video.mp4"
    with Harness(Renderer, {"mp4_path": str(mp4), "voice_tracks": 0}) as h:
        for k in range(50):  # 0.5 s of audio before any frame
            start = k * 160
            h.feed("audio", AudioChunk(samples=tone(160, start, 440), first_sample=start,
                                       capture_ns=h.epoch_ns + start * 62_500))
        h.feed("video", frame(12, h.epoch_ns))
        h.end()
    with av.open(str(mp4)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert np.abs(audio[1000:7000]).max() > 0.2


def test_draws_heatmap_boxes_speaking_and_latency_strip() -> None:
    with Harness(Renderer, {"web_port": 0, "latency_strip": True}) as h:
        h.node.telemetry = {"camera": {"compute_ms": {"p50": 1.5}, "inputs": {}},
                            "separator": {"compute_ms": {"p50": 8.0},
                                          "inputs": {"audio": {"latency_ms": {"p50": 22.0}, "dropped": 3}}}}
        heat = np.zeros((12, 16), np.float32)
        heat[:, 8:] = 1.0  # right half is hot
        # the heatmap names face 7 as the one speaking (fusion's lip-sync decision): its box is tagged
        h.feed("heatmap", Heatmap(heatmap=heat, frame_index=0, capture_ns=h.epoch_ns, speaking_track_id=7))
        h.feed("faces", FaceTracks(boxes=np.array([[10, 20, 60, 90]], np.float32), track_ids=np.array([7]),
                                   lip_features=np.zeros((1, 4), np.float32), frame_width=W, frame_height=H,
                                   capture_ns=h.epoch_ns))
        h.feed("voices", SeparatedAudio(samples=tone(160, 0, 300, 0.5)[None], track_ids=np.array([7]),
                                        capture_ns=h.epoch_ns))
        h.feed("video", frame(0, h.epoch_ns, value=90))
        canvas = h.node.sinks["web"].view._image
        stats = h.node.sinks["web"].view._stats
    assert canvas is not None and canvas.shape == (H, W, 3)
    # heatmap: hot right half recoloured (jet red), cold left half untouched where nothing else is drawn
    assert np.abs(canvas[60, 140].astype(int) - 90).max() > 30
    assert np.abs(canvas[60, 100].astype(int) - 90).max() > 30
    assert (canvas[50, 5] == 90).all()
    # the face box edge is drawn in the track's colour, thick because the heatmap says it speaks
    assert tuple(canvas[50, 10]) == overlay.track_colour(7)
    assert tuple(canvas[50, 11]) == overlay.track_colour(7)
    # latency strip darkens the bottom rows; frame number label darkens the top-left
    assert canvas[H - 2, W // 2].max() < 90
    assert canvas[8, 8].max() < 90 or canvas[8, 8].min() > 200
    assert [r["node"] for r in stats["rows"]] == ["camera", "separator"]
    assert stats["rows"][1]["age_ms"] == 22.0 and stats["rows"][1]["dropped"] == 3


def test_stale_overlays_are_not_drawn() -> None:
    with Harness(Renderer, {"web_port": 0, "latency_strip": False, "stale_ms": 100.0}) as h:
        h.feed("heatmap", Heatmap(heatmap=np.ones((4, 4), np.float32), capture_ns=h.epoch_ns))
        h.feed("video", frame(25, h.epoch_ns))  # 1 s later than the heatmap
        canvas = h.node.sinks["web"].view._image
    assert (canvas[60:, :] == 90).all()


def test_bad_sample_rate_is_bad_input() -> None:
    from pipeline.node import BadInput

    with Harness(Renderer, {"mp4_path": ""}) as h, pytest.raises(BadInput):
        h.feed("voices", SeparatedAudio(samples=np.zeros((1, 10), np.float32), track_ids=np.array([1]),
                                        sample_rate_hz=8000))


def test_window_without_display_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with Harness(Renderer, {"window": True}) as h:
        h.feed("video", frame(0, h.epoch_ns))
        assert "window" not in h.node.sinks


def test_renderer_and_stft_in_a_real_graph(tmp_path: Path) -> None:
    """Separate processes under the real supervisor: unwired optional inputs, telemetry, the
    MP4 finalised on end of stream and reported as an artifact."""
    import av
    import yaml

    from pipeline.graph import load_graph
    from pipeline.supervisor import Supervisor
    from tests.runtime_nodes import REGISTRY

    mp4 = tmp_path / "graph.mp4"
    graph = {"name": "render_test", "nodes": {
        "camera": {"type": "ticker", "params": {"rate_hz": 25, "count": 25, "height": 48, "width": 64}},
        "microphone": {"type": "audio_ticker", "params": {"count": 100, "rate_hz": 100}},
        "stft": {"type": "stft", "inputs": {"audio": "microphone/audio"}},
        "renderer": {"type": "renderer", "params": {"mp4_path": str(mp4), "fps": 25.0},
                     "inputs": {"video": "camera/frames", "audio": "microphone/audio"}},
    }}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    registry = {**REGISTRY, "renderer": "nodes.renderer:Renderer", "stft": "nodes.stft:Stft"}
    supervisor = Supervisor(load_graph(path, registry))
    supervisor.start()
    assert supervisor.run(timeout_s=30) == 0
    assert mp4.exists(), f"renderer did not finish the file (run dir {supervisor.run_dir})"
    with av.open(str(mp4)) as c:
        assert len(c.streams.audio) == 1  # `voices` not wired: no voice tracks
        assert 20 <= len(list(c.decode(video=0))) <= 25


def test_window_with_display_but_headless_opencv_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")  # no X server behind it: the headless wheel must not matter
    with Harness(Renderer, {"window": True}) as h:
        h.feed("video", frame(0, h.epoch_ns))
        assert "window" not in h.node.sinks or h.node.counters["frames_received"] == 1


def test_unknown_colormap_is_a_param_error() -> None:
    with pytest.raises(ValueError, match="colormap"):
        Renderer.make_params({"colormap": "rainbow"})


def test_speakers_play_the_loudest_voice_or_the_mixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The selection logic, with a stand-in for media.audio_device.AudioOutput (the real
    device path is heard back through a PulseAudio null sink in the device tests)."""
    import sys
    import types

    played: list[np.ndarray] = []

    class FakeOutput:
        def __init__(self, device: object = None, sample_rate_hz: int = SR) -> None:
            self.device, self.sample_rate_hz = device, sample_rate_hz

        def write(self, samples: np.ndarray) -> None:
            played.append(np.array(samples))

        def close(self) -> None:
            played.append(np.array([]))

    monkeypatch.setitem(sys.modules, "media.audio_device", types.SimpleNamespace(AudioOutput=FakeOutput))
    with Harness(Renderer, {"audio_out": True}) as h:
        h.feed("audio", AudioChunk(samples=tone(160, 0, 440), capture_ns=h.epoch_ns))
        assert np.array_equal(played[-1], tone(160, 0, 440))  # no voices yet: the mixture
        loud, quiet = tone(160, 0, 300, 0.5), tone(160, 0, 500, 0.01)
        h.feed("voices", SeparatedAudio(samples=np.stack([quiet, loud]), track_ids=np.array([1, 2]),
                                        capture_ns=h.epoch_ns))
        assert np.array_equal(played[-1], loud)
        n = len(played)
        h.feed("audio", AudioChunk(samples=tone(160, 160, 440), first_sample=160, capture_ns=h.epoch_ns))
        assert len(played) == n  # voices exist now: the mixture is no longer played
    assert played[-1].size == 0  # closed
    with Harness(Renderer, {"audio_out": True, "play_track": 1}) as h:
        h.feed("voices", SeparatedAudio(samples=np.stack([quiet, loud]), track_ids=np.array([1, 2]),
                                        capture_ns=h.epoch_ns))
        assert np.array_equal(played[-1], quiet)


def test_heatmap_gain_brightens_a_weak_map_for_display() -> None:
    """A clipped-cosine map near 0.25 is faint as is; the display gain makes it show."""
    def drawn(gain: float) -> int:
        with Harness(Renderer, {"web_port": 0, "latency_strip": False, "heatmap_gain": gain}) as h:
            h.feed("heatmap", Heatmap(heatmap=np.full((12, 16), 0.25, np.float32), capture_ns=h.epoch_ns))
            h.feed("video", frame(0, h.epoch_ns, value=90))
            return int(np.abs(h.node.sinks["web"].view._image[H // 2, W // 2].astype(int) - 90).max())

    assert drawn(4.0) > drawn(1.0) + 20
    with pytest.raises(ValueError, match="heatmap_gain"):
        Renderer.Params(heatmap_gain=0).validate()


def faces_at(h: Harness, i: int, boxes: list[list[float]], track_ids: list[int]) -> FaceTracks:
    return FaceTracks(boxes=np.array(boxes, np.float32), track_ids=np.array(track_ids),
                      lip_features=np.zeros((len(track_ids), 4), np.float32), frame_width=W, frame_height=H,
                      capture_ns=h.epoch_ns + i * 1_000_000_000 // FPS)


def test_voices_json_maps_each_voice_to_its_face_box_track(tmp_path: Path) -> None:
    """Issue #16: beside the WAVs, each voice's face boxes as [time s, x, y, w, h] on the WAVs' clock.
    Face 3 never gets a voice (no entry); voice 9's face is never seen (an empty track)."""
    import json

    fed: dict[int, list[list[float]]] = {7: [], 3: []}
    with Harness(Renderer, {"wav_dir": str(tmp_path / "voices")}) as h:
        for i in range(0, 25, 5):
            box7, box3 = [10.0 + i, 20.0, 60.0 + i, 90.5], [100.0, 10.0, 150.0, 70.0]
            h.feed("faces", faces_at(h, i, [box7, box3], [7, 3]))
            for track_id, (x0, y0, x1, y1) in ((7, box7), (3, box3)):
                fed[track_id].append([i / FPS, x0, y0, x1 - x0, y1 - y0])
        feed_clip(h, 1.0, voices=True)
        h.end()
        assert str((tmp_path / "voices" / "voices.json").resolve()) in h.node.artifacts
    sidecar = json.loads((tmp_path / "voices" / "voices.json").read_text())
    assert sidecar["columns"] == ["time_s", "x", "y", "w", "h"]
    assert (sidecar["frame_width"], sidecar["frame_height"], sidecar["sample_rate_hz"]) == (W, H, SR)
    assert sorted(sidecar["voices"]) == ["7", "9"]
    assert sidecar["voices"]["7"]["wav"] == "voice_7.wav" and sidecar["voices"]["9"]["wav"] == "voice_9.wav"
    assert np.allclose(sidecar["voices"]["7"]["boxes"], fed[7], atol=1e-3)
    assert sidecar["voices"]["9"]["boxes"] == []
    for voice in sidecar["voices"].values():
        assert (tmp_path / "voices" / voice["wav"]).exists()


def test_heartbeat_counts_what_came_in_and_what_each_sink_wrote(tmp_path: Path) -> None:
    """The run's summary can say "frames written of frames read, audio seconds written of read"."""
    params = {"mp4_path": str(tmp_path / "r.mp4"), "wav_dir": str(tmp_path / "wavs"), "fps": float(FPS),
              "voice_tracks": 1}
    with Harness(Renderer, params) as h:
        feed_clip(h, 1.0, voices=True)
        h.end()
        counters = h.node.counters
    assert counters["frames_received"] == FPS and counters["mp4.frames_written"] == FPS
    for track in ("mixture", "voice_7", "voice_9"):
        assert counters[f"audio_s_received.{track}"] == pytest.approx(1.0)
    assert counters["mp4.audio_s_written.mixture"] == pytest.approx(1.0)
    assert counters["mp4.audio_s_written.voice_7"] == pytest.approx(1.0)
    assert "mp4.audio_s_written.voice_9" not in counters  # one voice track in the file: voice 9 has none
    assert counters["mp4.voices_not_in_mp4"] == 100  # its 100 blocks, counted instead
    assert counters["wav.audio_s_written.voice_7"] == counters["wav.audio_s_written.voice_9"] == pytest.approx(1.0)
