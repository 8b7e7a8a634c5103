"""Issue #14: the speaking face a user sees (tagged by the fusion's lip-sync choice) and the
per-frame record a program reads (JSON lines beside the MP4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from media import overlay
from media.sinks import DrawnFrame, FrameRecordSink
from media.sinks.frame_record import peak_xy
from nodes.renderer import Renderer
from pipeline.harness import Harness
from pipeline.messages import FaceTracks, Heatmap, SeparatedAudio, VideoFrame

W, H = 160, 120
LOUD = 0.5  # RMS of a voice whose level is ≥ 0.5: tagged by the old rule


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_sink_writes_one_json_line_per_frame_with_the_peak_in_frame_pixels(tmp_path: Path) -> None:
    heat = np.zeros((12, 16), np.float32)
    heat[3, 12] = 1.0  # a 12×16 map over a 160×120 frame: cell (row 3, col 12) is centred at (125, 35)
    sink = FrameRecordSink(tmp_path / "run" / "clip.jsonl")
    image = np.zeros((H, W, 3), np.uint8)
    sink.video(DrawnFrame(image, 0.04, index=1, heatmap=heat, faces={7: [10.0, 20.0, 60.0, 90.0]},
                          speaking=7, speaking_score=0.61))
    sink.video(DrawnFrame(image, None, index=2))  # unstamped, nothing fresh
    nan_heat = np.full((12, 16), np.nan, np.float32)
    sink.video(DrawnFrame(image, float("nan"), index=3, heatmap=nan_heat, faces={3: [0.0, 0.0, 5.0, 5.0]},
                          speaking=3, speaking_score=float("nan")))
    assert sink.stats() == {"frames_written": 3}
    assert sink.close() == [tmp_path / "run" / "clip.jsonl"] and sink.close() == []
    first, second, third = lines(tmp_path / "run" / "clip.jsonl")
    assert first["frame"] == 1 and first["time_s"] == 0.04
    assert abs(first["peak"]["x"] - 125) <= 1 and abs(first["peak"]["y"] - 35) <= 1
    assert first["peak"]["value"] == pytest.approx(1.0, abs=0.3)
    assert first["faces"] == [{"id": 7, "box": [10.0, 20.0, 60.0, 90.0]}]
    assert (first["speaking"], first["speaking_score"]) == (7, 0.61)
    assert second == {"frame": 2, "time_s": None, "peak": None, "faces": [], "speaking": None,
                      "speaking_score": None}
    assert third["peak"] is None and third["time_s"] is None and third["speaking_score"] is None  # NaN → null


def test_a_nan_cell_does_not_win_the_peak() -> None:
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0], heat[2, 3] = np.nan, 0.8
    x, y, value = peak_xy(heat, 40, 40)
    assert (x // 10, y // 10) == (3, 2) and np.isfinite(value)


def test_a_restarted_renderer_goes_on_in_the_same_record_and_a_new_run_starts_it_anew(tmp_path: Path) -> None:
    def drawn(i: int) -> DrawnFrame:
        return DrawnFrame(np.zeros((H, W, 3), np.uint8), i / 25, index=i)

    path = tmp_path / "out" / "demo.jsonl"
    first = FrameRecordSink(path, run_id="run-1")
    for i in range(3):
        first.video(drawn(i))
    first.file.close()  # a kill -9: no close(), the lines written so far are on disk
    again = FrameRecordSink(path, run_id="run-1")
    for i in range(3, 5):
        again.video(drawn(i))
    again.close()
    assert [line["frame"] for line in lines(path)] == [0, 1, 2, 3, 4]
    assert again.frames_before == 3 and not (tmp_path / "out" / ".demo.jsonl.run").exists()
    fresh = FrameRecordSink(path, run_id="run-2")
    fresh.video(drawn(9))
    fresh.close()
    assert [line["frame"] for line in lines(path)] == [9]


def test_a_sink_that_saw_no_frame_leaves_no_file(tmp_path: Path) -> None:
    sink = FrameRecordSink(tmp_path / "none.jsonl")
    assert sink.close() == [] and not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize("params, path", [
    ({"mp4_path": "out/a.mp4"}, "out/a.jsonl"),  # by default beside the MP4
    ({"mp4_path": "out/a.mp4", "record_path": "r.jsonl"}, "r.jsonl"),
    ({"mp4_path": "out/a.mp4", "record_path": "none"}, ""),
    ({}, ""),
])
def test_the_record_goes_beside_the_mp4_unless_told_otherwise(params: dict, path: str) -> None:
    assert Renderer("r", Renderer.make_params(params), runtime=None).record_path() == path


def test_speaking_ids_follow_the_named_track_else_the_voice_level() -> None:
    levels = {7: LOUD, 9: 0.0}
    assert overlay.speaking_ids([7, 9], levels, 9) == {9}  # lip-sync names 9 though 7's voice is loud
    assert overlay.speaking_ids([7, 9], levels, -1) == set()  # the fusion says nobody speaks
    assert overlay.speaking_ids([7, 9], levels, 4) == set()  # a face not in this frame
    assert overlay.speaking_ids([7, 9], levels, None) == {7}  # no judgement: the old level rule


def feed_two_faces(h: Harness, speaking_track_id: int | None) -> None:
    """Faces 7 and 9, 7's isolated voice loud; the heatmap (if fed) names ``speaking_track_id``."""
    if speaking_track_id is not None:
        heat = np.zeros((12, 16), np.float32)
        heat[3, 12] = 1.0
        h.feed("heatmap", Heatmap(heatmap=heat, speaking_track_id=speaking_track_id, speaking_score=0.7,
                                  capture_ns=h.epoch_ns))
    h.feed("faces", FaceTracks(boxes=np.array([[10, 20, 60, 90], [90, 20, 140, 90]], np.float32),
                               track_ids=np.array([7, 9]), lip_features=np.zeros((2, 4), np.float32),
                               frame_width=W * 2, frame_height=H * 2, capture_ns=h.epoch_ns))  # boxes of a 2× frame
    h.feed("voices", SeparatedAudio(samples=np.full((2, 160), LOUD, np.float32) * np.array([[1.0], [0.0]], np.float32),
                                    track_ids=np.array([7, 9]), capture_ns=h.epoch_ns))
    h.feed("video", VideoFrame(image=np.full((H, W, 3), 90, np.uint8), frame_index=0, capture_ns=h.epoch_ns))


@pytest.mark.parametrize("wired, named, tagged", [
    ({"video", "heatmap", "faces", "voices"}, 9, {9}),     # the heatmap's lip-sync choice, not the loud voice
    ({"video", "heatmap", "faces", "voices"}, -1, set()),  # the heatmap says nobody speaks
    ({"video", "faces", "voices"}, None, {7}),             # no heatmap wired: the loud voice, as before
])
def test_the_renderer_tags_the_face_the_heatmap_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      wired: set, named: int | None, tagged: set) -> None:
    drawn: dict[int, tuple[float | None, bool | None]] = {}  # track id → (level bar, speaking tag)
    draw_face = overlay.draw_face

    def spy(image, box, track_id, speaking_level=None, label=None, speaking=None):
        drawn[track_id] = (speaking_level, speaking)
        return draw_face(image, box, track_id, speaking_level, label, speaking)

    monkeypatch.setattr(overlay, "draw_face", spy)
    mp4 = tmp_path / "out.mp4"
    with Harness(Renderer, {"mp4_path": str(mp4), "latency_strip": False}, wired=wired) as h:
        feed_two_faces(h, named)
        assert drawn[7][0] == 1.0 and drawn[9][0] == 0.0  # the level bars still follow the voices
        h.end()
        assert str(mp4.with_suffix(".jsonl").resolve()) in h.node.artifacts
    assert {i for i, (_, speaking) in drawn.items() if speaking} == tagged
    (line,) = lines(mp4.with_suffix(".jsonl"))
    assert line["faces"] == [{"id": 7, "box": [5.0, 10.0, 30.0, 45.0]}, {"id": 9, "box": [45.0, 10.0, 70.0, 45.0]}]
    assert line["speaking"] == (named if named is not None and named >= 0 else None)
    assert line["speaking_score"] == (0.7 if line["speaking"] is not None else None)
    if named is None:
        assert line["peak"] is None
    else:
        assert abs(line["peak"]["x"] - 125) <= 1 and abs(line["peak"]["y"] - 35) <= 1
