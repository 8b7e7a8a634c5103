"""The real-footage evaluation of localization (issue 14, `lab/localization/real_footage.py`): the voice
activity rule on a signal with known speech spans, the two-people composite builder and its window score,
the hand-drawn labels of the sounding scenes, and the command's exit 2 without the shared data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lab.corpus.data_paths import data_root
from lab.localization import real_footage as rf

SR, FPS = 16000, 25.0
SPF = int(SR / FPS)  # 640 samples per video frame
REAL = data_root() / "video" / "real"
needs_real = pytest.mark.skipif(not (REAL / "voxceleb").is_dir() or not (REAL / "sounding").is_dir(),
                                reason=f"SHARED DATA MISSING: {REAL} (real footage; set EARSHOT_DATA)")


def _burst(n: int, rng: np.random.Generator, level: float = 0.1) -> np.ndarray:
    """A voiced-band sound (three tones in 300–3400 Hz, slowly modulated) with 5 ms ramps."""
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (450.0, 1250.0, 2600.0))
    x *= level * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.005 * SR))
    return x * ramp


def _signal(spans: list[tuple[int, int]], n_frames: int = 200, noise_dbfs: float = -60.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10 ** (noise_dbfs / 20), n_frames * SPF)
    for a, b in spans:
        x[a * SPF:b * SPF] += _burst((b - a) * SPF, rng)
    return x.astype(np.float32)


def _expected(spans: list[tuple[int, int]], n_frames: int = 200) -> np.ndarray:
    hang = int(round(rf.VAD_HANGOVER_S * FPS))
    out = np.zeros(n_frames, bool)
    for a, b in spans:
        out[a:min(n_frames, b + hang)] = True
    return out


def test_voice_activity_finds_known_speech_spans_with_hangover():
    spans = [(25, 50), (100, 130)]
    got = rf.voice_activity(_signal(spans), FPS, 200)
    assert np.array_equal(got, _expected(spans)), np.flatnonzero(got != _expected(spans))


def test_voice_activity_bridges_short_pauses_and_drops_blips():
    # a 3-frame pause (120 ms) inside a span is held by the hangover; a 1-frame blip (40 ms) is dropped
    x = _signal([(40, 70), (73, 90), (150, 151)])
    got = rf.voice_activity(x, FPS, 200)
    assert got[40:95].all() and not got[95:].any() and not got[:40].any()


def test_voice_activity_ignores_out_of_band_sound_and_quiet_clips():
    x = _signal([(25, 50)])
    t = np.arange(len(x)) / SR
    hum = (0.1 * np.sin(2 * np.pi * 100 * t) + 0.1 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    x[120 * SPF:160 * SPF] += hum[120 * SPF:160 * SPF]  # loud, but below 300 Hz and above 3400 Hz
    assert np.array_equal(rf.voice_activity(x, FPS, 200), _expected([(25, 50)]))
    quiet = _signal([(25, 50)], noise_dbfs=-90.0) * 10 ** (-45 / 20)  # the "speech" at about −70 dBFS
    assert not rf.voice_activity(quiet, FPS, 200).any(), "below −55 dBFS nothing is speech"


def test_voice_activity_at_other_frame_rates():
    spans = [(30, 60)]
    fps = 30.0
    rng = np.random.default_rng(1)
    n = 150
    x = rng.normal(0, 1e-3, int(n * SR / fps)).astype(np.float32)
    a, b = int(round(30 * SR / fps)), int(round(60 * SR / fps))
    x[a:b] += _burst(b - a, rng)
    got = rf.voice_activity(x, fps, n)
    assert got[30:60].all() and not got[:30].any() and not got[60 + int(round(rf.VAD_HANGOVER_S * fps)):].any()


def test_logmel_windows_match_the_live_window():
    from engines.localization.localizer_inputs import window_logmel

    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SR).astype(np.float32)
    windows = rf.LogmelWindows(audio)
    for end in (640, 16000, 16640, 3 * SR, 3 * SR + 640, 12345):  # on and off the hop grid, past the end
        padded = np.pad(audio, (0, max(0, end - len(audio))))
        assert np.array_equal(windows(end), window_logmel(padded[:end]))


def _frames(n: int, h: int, w: int, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> list[np.ndarray]:
    frames = []
    for _ in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:] = colour
        x1, y1, x2, y2 = box
        f[y1:y2, x1:x2] = 255  # a white "face" where the box is
        frames.append(f)
    return frames


def test_composite_maps_boxes_and_keeps_the_speakers_audio():
    left_box, right_box = (20, 30, 60, 80), (10, 5, 40, 35)
    left = _frames(5, 112, 200, (0, 0, 200), left_box)   # scaled ×2 to 224 high: 400 wide
    right = _frames(4, 56, 80, (200, 0, 0), right_box)   # scaled ×4: 320 wide; the shorter clip sets n
    lb = np.tile(np.array(left_box, np.float32), (5, 1))
    rb = np.tile(np.array(right_box, np.float32), (4, 1))
    rb[2] = np.nan  # face not found in that frame
    audio = np.arange(10 * SPF, dtype=np.float32)
    speech = np.array([1, 1, 0, 1, 1, 1, 1], bool)
    comp = rf.compose(left, right, lb, rb, audio, speech, speaker=1, fps=FPS)
    assert len(comp.frames) == 4 and comp.frames[0].shape == (224, 720, 3)
    assert comp.speaker == 1 and np.array_equal(comp.speech, speech[:4])
    assert np.array_equal(comp.audio, audio[:4 * SPF]), "the speaker's own audio, as long as the video"
    assert np.allclose(comp.boxes[0, 0], [40, 60, 120, 160])
    assert np.allclose(comp.boxes[0, 1], [400 + 40, 20, 400 + 160, 140])
    assert np.isnan(comp.boxes[2, 1]).all() and not np.isnan(comp.boxes[2, 0]).any()
    f = comp.frames[0]
    for k in (0, 1):  # the mapped boxes land on the white patches, and the canvas keeps each side's colour
        x1, y1, x2, y2 = comp.boxes[0, k].astype(int)
        assert f[y1 + 2:y2 - 2, x1 + 2:x2 - 2].min() >= 250
    assert tuple(f[200, 10]) == (0, 0, 200) and tuple(f[200, 710]) == (200, 0, 0)


def test_window_score_counts_the_speaking_face():
    n = 50
    # a 448×224 canvas; the left face box around x = 112, the right one around x = 336
    boxes = np.tile(np.array([[60, 60, 150, 160], [300, 60, 380, 160]], np.float32), (n, 1, 1))
    right_peak = np.zeros((14, 14), np.float32)
    right_peak[7, 10] = 1.0  # upsampled: x ≈ 10.5 / 14 · 448 = 336, y ≈ 120
    rec = {"model": np.repeat(right_peak[None], n, 0), "face": np.repeat(right_peak[None, :, ::-1], n, 0),
           "boxes": boxes, "speech": np.r_[np.ones(25, bool), np.zeros(25, bool)], "speaker": 1,
           "size": (448, 224), "fps": FPS}
    scores = rf.window_scores(rec, np.random.default_rng(0))
    assert scores["model"] == (1, 0, 1), "one 1 s window has speech; the peak is on the speaker"
    assert scores["face channel alone"] == (0, 1, 1), "peak on the silent face"
    assert scores["centre prior"] == (0, 0, 1), "the canvas centre lies between the two faces"
    assert sum(scores["random face"][:2]) == 1 and scores["random face"][2] == 1


@needs_real
def test_composite_specs_pair_two_identities_in_both_orders_and_both_speakers():
    from lab.real_faces.face_tracks import TEST_IDS

    specs = rf.composite_specs("test", pairs=5, seed=3)
    assert specs == rf.composite_specs("test", pairs=5, seed=3), "deterministic from the seed"
    assert len(specs) == 20 and len({s.name for s in specs}) == 20
    for k in range(5):
        group = specs[4 * k:4 * k + 4]
        ids = {s.left.parent.name for s in group} | {s.right.parent.name for s in group}
        assert ids == set(TEST_IDS), "two different held-out identities"
        speakers = [(s.left, s.right)[s.speaker] for s in group]
        lefts = [s.left for s in group]
        assert len(set(speakers)) == 2 and all(speakers.count(x) == 2 for x in speakers), "each person speaks twice"
        assert all(lefts.count(x) == 2 for x in lefts), "each person on each side twice"
        sides = {((s.left, s.right)[s.speaker], s.speaker) for s in group}
        assert len(sides) == 4, "each speaker heard once on the left and once on the right"


def test_sounding_labels_parse_and_lie_inside_their_frames():
    doc = json.loads(rf.LABELS.read_text())
    assert "by hand by this project" in doc["provenance"]
    clips = rf.load_labels()
    assert len(clips) == 9
    frames = [f for c in clips for f in c["frames"]]
    assert len(frames) >= 60
    for c in clips:
        w, h = c["width"], c["height"]
        idx = [f["frame"] for f in c["frames"]]
        assert idx == sorted(set(idx)) and idx[0] >= 1
        for f in c["frames"]:
            assert f["boxes"], f"{c['clip']} frame {f['frame']}: no box"
            for b in f["boxes"]:
                x1, y1, x2, y2 = b["box"]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (c["clip"], f["frame"], b)
                assert b["object"] in c["objects"]


@needs_real
def test_sounding_labels_match_the_clips():
    import av

    for c in rf.load_labels():
        path = REAL / "sounding" / c["clip"]
        assert path.is_file(), path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.height, stream.codec_context.width) == (c["height"], c["width"])
            assert abs(float(stream.average_rate) - c["fps"]) < 0.01
            n = sum(1 for _ in container.demux(stream) if _.size)
        assert max(f["frame"] for f in c["frames"]) < n


def test_eval_command_exits_2_without_the_shared_data(tmp_path, monkeypatch, capsys):
    from lab.localization.eval_localizer import main

    monkeypatch.setenv("EARSHOT_DATA", str(tmp_path))
    assert main(["--real-footage"]) == 2
    assert "needed data not found" in capsys.readouterr().err


# -- the speaking-face rows (lip sync): synthetic, no shared data ---------------------------------------------

def _two_faces_rec(n: int = 50, speaker: int = 1) -> dict:
    """A 448×224 canvas, faces around x = 112 (left) and x = 336 (right); the model's map peaks on the left."""
    boxes = np.tile(np.array([[60, 60, 150, 160], [300, 60, 380, 160]], np.float32), (n, 1, 1))
    left_peak = np.zeros((14, 14), np.float32)
    left_peak[7, 3] = 1.0  # upsampled: x ≈ 3.5 / 14 · 448 = 112
    return {"model": np.repeat(left_peak[None], n, 0), "face": np.repeat(left_peak[None], n, 0), "boxes": boxes,
            "speech": np.ones(n, bool), "speaker": speaker, "size": (448, 224), "fps": FPS}


def test_fused_map_puts_the_peak_on_the_chosen_face():
    from engines.localization.speaking_face import fuse
    from lab.localization.localizer_real_video import inside, peak_xy

    rec = _two_faces_rec()
    fused, alone = rf.LIP_SYNC_METHODS
    rec["sync_box"] = rec["boxes"][:, 1].copy()  # the lip sync picks the right face, the speaker
    scores = rf.window_scores(rec, np.random.default_rng(0))
    assert scores["model"] == (0, 2, 2), "the model alone is on the silent (left) face"
    assert scores[fused] == (2, 0, 2) and scores[alone] == (2, 0, 2)
    peak = peak_xy(fuse(rec["model"][0], rec["boxes"][0, 1], (448, 224)), 448, 224)
    assert inside(peak, rec["boxes"][0, 1]), peak
    # a face 1.5 cells wide, far from the map's peak, centred between cell centres, still wins: the bump's
    # highest cell is 1, above the map scaled to 0.75 (`face_bump` scales to its sampled maximum)
    small = np.array([390, 8, 438, 38], np.float32)
    assert inside(peak_xy(fuse(rec["model"][0], small, (448, 224)), 448, 224), small)
    rec["sync_box"][:] = np.nan  # no face chosen: the fused map is the model's, lip sync alone the centre prior
    scores = rf.window_scores(rec, np.random.default_rng(0))
    assert scores[fused] == scores["model"] and scores[alone] == scores["centre prior"] == (0, 0, 2)
    rec["sync_box"][:30] = rec["boxes"][:30, 0]  # the silent face chosen in the first window only
    scores = rf.window_scores(rec, np.random.default_rng(0))
    assert scores[alone] == (0, 1, 2) and scores[fused] == (0, 2, 2)


def _synthetic_sync(n_frames: int = 100, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Two tracks on every frame: track 7's lips follow the audio embeddings (frame t = group t), track 9's
    are unrelated; both have a box."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n_frames, 64)).astype(np.float32)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    other = rng.normal(size=(n_frames, 64)).astype(np.float32)
    lips = {"frame": np.repeat(np.arange(n_frames), 2).astype(np.int32),
            "track": np.tile([7, 9], n_frames).astype(np.int64),
            "box": np.tile(np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), (n_frames, 1)),
            "lips": np.stack([audio, other], axis=1).reshape(-1, 64) + 0.3 * rng.normal(size=(2 * n_frames, 64)
                                                                                      ).astype(np.float32)}
    return lips, audio


def test_sync_trace_picks_the_synchronous_face_and_matches_decide():
    from engines.localization.speaking_face import SpeakingFaceConfig

    lips, audio = _synthetic_sync()
    config = SpeakingFaceConfig()
    trace = rf.sync_trace(lips, audio, np.arange(100) / FPS, config)
    late = slice(config.min_groups + 2, None)
    assert (trace["speaker"][late] == 7).all() and np.allclose(trace["box"][late], [0, 0, 10, 10])
    assert (trace["speaker"][:config.min_groups] == -1).all(), "too few groups heard yet"
    same = rf.decide(trace, config.threshold, config.margin)
    assert np.array_equal(np.isnan(same[:, 0]), trace["speaker"] == -1)
    assert np.allclose(same[late], trace["box"][late])
    assert np.isnan(rf.decide(trace, 2.0, 0.0)).all(), "a cosine never reaches 2"
    # the pair rule (lab only, rejected on validation): under any threshold, a lead of 0.2 over the other face
    lead = rf.decide(trace, 2.0, 0.0, pair_margin=0.2, pair_floor=0.0)
    gap = trace["best"] - trace["second"]
    chosen = (trace["scored"] > 1) & (trace["best"] >= 0.0) & (gap >= 0.2)
    assert np.array_equal(~np.isnan(lead[:, 0]), chosen) and chosen[late].all()


@pytest.mark.parametrize("delay_s", [0.0, -0.24])
def test_sync_trace_never_uses_audio_after_the_frame_time_plus_the_delay(delay_s):
    lips, audio = _synthetic_sync()
    frame_s = np.arange(100) / FPS
    base = rf.sync_trace(lips, audio, frame_s, audio_delay_s=delay_s)
    centre_s = (np.arange(100) * 640 + 320) / SR
    for t in (20, 50, 80):
        changed = audio.copy()
        future = centre_s > frame_s[t] + delay_s
        changed[future] = -changed[future]  # the sound after the frame's time: anti-synchronous
        got = rf.sync_trace(lips, changed, frame_s, audio_delay_s=delay_s)
        for k in ("speaker", "best", "second"):
            assert np.array_equal(got[k][:t + 1], base[k][:t + 1], equal_nan=True), (t, k)
        assert not np.array_equal(got["best"][t + 1:], base["best"][t + 1:], equal_nan=True)


def test_sync_embeddings_look_ahead_is_two_tenths_of_a_second():
    """Group g's embedding depends on samples < 640 g + 4136 only (0.24 s after its centre, 640 g + 320):
    the lag stated in the lip-sync section."""
    from engines.loader import load

    engine = load("sync_audio", "onnxruntime", threads=1)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.normal(size=2 * SR)).astype(np.float32)
    base = rf.sync_embeddings(engine, x)
    assert base.shape == (50, 64) and np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-4)
    g = 20
    y = x.copy()
    y[640 * g + 4136:] = (0.1 * rng.normal(size=len(y) - 640 * g - 4136)).astype(np.float32)
    got = rf.sync_embeddings(engine, y)
    assert np.allclose(got[:g + 1], base[:g + 1], atol=1e-5), "no group up to g hears the changed samples"
    assert not np.allclose(got[g + 1], base[g + 1], atol=1e-3), "group g + 1 does"


def test_lip_front_end_on_frames_without_faces_gives_empty_rows_and_no_speaker():
    lips = rf.LipSyncEngine(threads=1).lips(iter([np.zeros((120, 160, 3), np.uint8)] * 3))
    assert int(lips["n"]) == 3 and lips["lips"].shape == (0, 64) and lips["box"].shape == (0, 4)
    trace = rf.sync_trace(lips, np.zeros((3, 64), np.float32), np.arange(3) / FPS)
    assert (trace["speaker"] == -1).all() and np.isnan(trace["box"]).all()


def test_lip_sync_key_of_another_pair_follows_its_files_bytes(tmp_path):
    """``sync_dir`` (another training run's lip-sync pair): its own cache key, from the files' bytes; the
    shipped pair's key is unchanged, and a copy of the shipped files gives the shipped key."""
    import shutil

    from engines.models import WEIGHTS_DIR

    shipped = rf.lip_sync_key()
    assert rf.lip_sync_key(None) == shipped and shipped.startswith("lipsync-")
    (tmp_path / "lip_encoder.onnx").write_bytes(b"fake lip encoder")
    (tmp_path / "sync_audio.onnx").write_bytes(b"fake sync audio")
    fake = rf.lip_sync_key(tmp_path)
    assert fake != shipped and rf.lip_sync_key(tmp_path) == fake
    (tmp_path / "sync_audio.onnx").write_bytes(b"fake sync audio, another seed")
    assert rf.lip_sync_key(tmp_path) not in (fake, shipped)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in rf.SYNC_FILES:
        shutil.copy(WEIGHTS_DIR / name, copy / name)
    assert rf.lip_sync_key(copy) == shipped
    (tmp_path / "sync_audio.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="sync_audio.onnx"):
        rf.lip_sync_key(tmp_path)


def test_lip_sync_engine_runs_the_pair_in_sync_dir(tmp_path):
    """``LipSyncEngine(sync_dir=...)`` runs that folder's ONNX files: a copy of the shipped pair embeds as the
    shipped engine does, another sync_audio file does not."""
    import shutil

    from engines.models import WEIGHTS_DIR

    for name in rf.SYNC_FILES:
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    x = (0.1 * np.random.default_rng(0).normal(size=SR)).astype(np.float32)
    shipped = rf.LipSyncEngine(threads=1)
    copied = rf.LipSyncEngine(threads=1, sync_dir=tmp_path)
    assert np.allclose(copied.audio(x), shipped.audio(x), atol=1e-6)
    # the lip encoder's ONNX in place of the audio one: loaded from the folder, so the audio call fails
    shutil.copy(WEIGHTS_DIR / "lip_encoder.onnx", tmp_path / "sync_audio.onnx")
    with pytest.raises(Exception):
        rf.LipSyncEngine(threads=1, sync_dir=tmp_path).audio(x)


def test_speaking_face_tuning_without_the_sync_run_exits_2(capsys):
    from lab.localization import speaking_face_tuning

    assert speaking_face_tuning.main(["table", "--sync-run", "no-such-run-xyz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no-such-run-xyz" in err[0]
