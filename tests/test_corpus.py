"""Corpus generator: determinism, mixture = sum of parts, split hygiene, annotations, lip cue."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from lab.corpus.audio import envelope
from lab.corpus.evalset import EVAL_SEED_BASE, EVAL_SETS
from lab.corpus.localization_scenes import LocalizationConfig, make_localization_clip
from lab.corpus.data_paths import data_available, data_root
from lab.corpus.separation_scenes import SeparationConfig, make_separation_clip
from lab.corpus.speech import EVAL, TRAIN, espeak_available, espeak_speakers, speakers

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (apt-get install espeak-ng)")
needs_data = pytest.mark.skipif(
    not data_available(), reason=f"SHARED DATA MISSING at {data_root()} (set EARSHOT_DATA): LibriSpeech tests skipped"
)

# espeak-only configs: these tests run without ../shared/data
SEP = SeparationConfig(include_librispeech=False, duration_s=1.6, photo_prob=0.0)
LOC = LocalizationConfig(include_librispeech=False, duration_s=1.2)


def test_same_seed_same_bytes_and_other_seed_differs():
    a, b, c = make_separation_clip(7, SEP), make_separation_clip(7, SEP), make_separation_clip(8, SEP)
    for name in ("frames", "mixture", "sources", "noise", "boxes"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.meta == b.meta
    assert a.frames.tobytes() != c.frames.tobytes()
    la, lb = make_localization_clip(3, LOC), make_localization_clip(3, LOC)
    assert la.frames.tobytes() == lb.frames.tobytes() and la.masks.tobytes() == lb.masks.tobytes()


def test_exported_files_are_byte_identical(tmp_path):
    from lab.corpus.clip_export import export_clip

    cfg = replace(SEP, duration_s=1.0)
    pa = export_clip(make_separation_clip(11, cfg), tmp_path / "a", "clip")
    pb = export_clip(make_separation_clip(11, cfg), tmp_path / "b", "clip")
    for role in pa:
        assert pa[role].read_bytes() == pb[role].read_bytes(), role
    ann = json.loads(pa["json"].read_text())
    assert ann["fps"] == 25 and ann["sample_rate_hz"] == 16000 and len(ann["objects"]) == len(ann["meta"]["speakers"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mixture_is_sum_of_sources_plus_noise(seed):
    clip = make_separation_clip(seed, replace(SEP, num_speakers=(2, 3), noise_prob=0.5))
    np.testing.assert_allclose(clip.mixture, clip.sources.sum(0) + clip.noise, atol=1e-6)
    assert np.abs(clip.mixture).max() <= 0.9 + 1e-6
    loc = make_localization_clip(seed, LOC)
    np.testing.assert_allclose(loc.mixture, loc.sources.sum(0) + loc.noise, atol=1e-6)
    assert not np.any(loc.sources[~loc.sounding]), "silent distractors must be silent"


def test_snr_and_overlap_follow_the_config():
    cfg = replace(SEP, noise_prob=1.0, snr_db=(5.0, 5.0), overlap=(0.5, 0.5), duration_s=2.0)
    clip = make_separation_clip(4, cfg)
    snr = 10 * np.log10(np.mean(clip.sources.sum(0) ** 2) / np.mean(clip.noise**2))
    assert abs(snr - 5.0) < 0.05
    (a0, a1), (b0, b1) = clip.meta["active_samples"]
    both = max(0, min(a1, b1) - max(a0, b0)) / len(clip.mixture)
    assert abs(both - 0.5) < 0.01


def test_espeak_eval_voices_are_not_training_voices():
    train = {s.voice for s in espeak_speakers(TRAIN)}
    ev = {s.voice for s in espeak_speakers(EVAL)}
    assert train and ev and not train & ev


@needs_data
def test_no_training_speaker_in_eval_split():
    train = {s.id for s in speakers(TRAIN)}
    ev = {s.id for s in speakers(EVAL)}
    assert not train & ev
    libri_eval = {s.id for s in speakers(EVAL, include_espeak=False)}
    assert len(libri_eval) == 10
    for s in speakers(TRAIN):
        assert all("librispeech-test-other" not in f for f in s.files)
    for es in EVAL_SETS.values():
        assert es.config.split == EVAL and not es.config.include_espeak
        assert min(es.seeds()) >= EVAL_SEED_BASE
    es = EVAL_SETS["sep2-noisy"]
    cfg = replace(es.config, duration_s=1.0)
    for seed in list(es.seeds())[:2]:
        assert set(make_separation_clip(seed, cfg).meta["speakers"]) <= libri_eval


def test_localization_boxes_cover_drawn_objects():
    for seed in range(3):
        clip = make_localization_clip(seed, replace(LOC, degrade=False))
        for t in (0, clip.num_frames // 2, clip.num_frames - 1):
            ys, xs = np.nonzero(clip.masks[t])
            inside = np.zeros(len(xs), bool)
            for k in np.nonzero(clip.sounding)[0]:
                x0, y0, x1, y1 = clip.boxes[t, k]
                inside |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
                area = (x1 - x0) * (y1 - y0)
                drawn = clip.masks[t, int(y0):int(y1), int(x0):int(x1)].sum()
                assert area > 0 and drawn / area > 0.15, "a sounding box must contain its object"
            assert inside.all(), "every sounding pixel lies in a sounding object's box"


def _sounding_coverage(clip, t: int) -> float:
    """Share of the frame inside the union of the sounding objects' boxes (the LVS ground truth)."""
    covered = np.zeros(clip.frames.shape[1:3], bool)
    for x0, y0, x1, y1 in clip.boxes[t][clip.sounding].astype(int):
        covered[y0:y1, x0:x1] = True
    return float(covered.mean())


def test_localization_scenes_have_large_sounding_objects_and_smaller_silent_ones():
    # VGG-SS-like: the median-binarised LVS protocol caps cIoU at 2g when the ground truth covers
    # g < 1/2 of the frame, so the scenes frame their sounding objects large
    coverage, n_silent, silent_smaller = [], 0, []
    for seed in range(10):
        clip = make_localization_clip(seed, replace(LOC, degrade=False))
        t = clip.num_frames // 2
        coverage.append(_sounding_coverage(clip, t))
        area = (clip.boxes[t, :, 2] - clip.boxes[t, :, 0]) * (clip.boxes[t, :, 3] - clip.boxes[t, :, 1])
        n_silent += int((~clip.sounding).sum())
        if (~clip.sounding).any():
            silent_smaller.append(area[~clip.sounding].mean() < area[clip.sounding].mean())
        assert 1 <= clip.sounding.sum() <= 2
    assert 0.35 < np.median(coverage) < 0.65, coverage
    assert min(coverage) > 0.15
    assert n_silent >= 5, "scenes must hold silent distractors"
    assert np.mean(silent_smaller) >= 0.5, "distractors are usually the smaller objects (not always)"


def test_localization_transfer_options_are_training_only_and_do_what_they_say():
    from lab.corpus.localization_scenes import TRANSFER4

    # the eval sets keep the defaults (all off), so their scenes are the v4 ones
    assert all(getattr(es.config, k) == 0 for es in EVAL_SETS.values() if es.kind == "localization"
               for k in TRANSFER4)
    forced = replace(LOC, degrade=False, textured_background_prob=1.0, small_face_prob=1.0, wide_prob=1.0,
                     whole_photo_prob=1.0, subtitle_prob=1.0, hands_prob=1.0)
    for seed in range(4):
        clip = make_localization_clip(seed, forced)
        assert clip.frames.shape[1:3] == (240, 427) and clip.masks.shape[1:] == (240, 427)  # 16:9
        assert clip.meta["small_face"] and list(clip.sounding).count(True) == 1
        k = int(np.nonzero(clip.sounding)[0][0])
        assert clip.classes[k] == "face" and 1 <= (~clip.sounding).sum() <= 2
        t = clip.num_frames // 2
        area = (clip.boxes[t, :, 2] - clip.boxes[t, :, 0]) * (clip.boxes[t, :, 3] - clip.boxes[t, :, 1]) / (240 * 427)
        assert 0.005 < area[k] < 0.1, area
        assert area[~clip.sounding].max() > area[k], "the small talking face stands among larger silent things"
        assert clip.masks[t].any() and clip.masks[t].mean() < 0.1  # subtitles, hands, laid photos: not objects


def test_gesturing_hands_move_while_their_talker_speaks_and_rest_while_silent():
    """TRANSFER4's hard negatives: silent hands whose motion follows the speech gain."""
    from lab.corpus.localization_scenes import _hands

    n = 60
    gain = np.r_[np.zeros(n // 2), np.full(n // 2, 1.8)]  # silent for 1.2 s, then talking
    paint = _hands(np.random.default_rng(3), (150, 170, 210), 160.0, 150.0, 30.0, n, gesture=gain)
    frames = []
    for t in range(n):
        img = np.zeros((240, 320, 3), np.uint8)
        paint(img, t)
        frames.append(img.astype(np.int16))
    change = np.array([np.abs(frames[t] - frames[t - 1]).mean() for t in range(1, n)])
    assert change[5:n // 2 - 1].mean() < 0.1 * change[n // 2 + 5:].mean(), change
    assert all(f.any() for f in frames)  # on screen throughout


@needs_data
def test_localization_eval_set_uses_eval_speakers_and_eval_photos_only():
    from lab.corpus.photo_faces import photo_files

    es = EVAL_SETS["loc2"]
    libri_eval = {s.id for s in speakers(EVAL, include_espeak=False)}
    eval_photos = {p.stem for p in photo_files(EVAL)}
    train_photos = {p.stem for p in photo_files(TRAIN)}
    assert eval_photos and not eval_photos & train_photos
    seen_photo = False
    for seed in list(es.seeds())[:6]:
        clip = make_localization_clip(seed, replace(es.config, duration_s=1.0))
        assert {s for s in clip.meta["speakers"] if s} <= libri_eval
        for look in clip.meta["looks"]:
            if look.startswith("photo:"):
                seen_photo = True
                assert look[len("photo:"):] in eval_photos
    assert seen_photo


def _mouth_contrast(clip, k: int) -> np.ndarray:
    """Lip motion measured from pixels: grey-level spread in the mouth window of the face box."""
    out = []
    for t in range(clip.num_frames):
        x0, y0, x1, y1 = clip.boxes[t, k]
        w, h = x1 - x0, y1 - y0
        win = clip.frames[t, int(y0 + 0.68 * h):int(y0 + 0.92 * h), int(x0 + 0.28 * w):int(x1 - 0.28 * w)]
        out.append(cv2.cvtColor(win, cv2.COLOR_BGR2GRAY).astype(np.float32).std())
    return np.array(out)


def test_lip_motion_follows_own_speech_not_the_other_speaker():
    cfg = replace(SEP, num_speakers=(2,), overlap=(0.3, 1.0), duration_s=2.0)
    own, other, own_px, other_px = [], [], [], []
    for seed in range(6):
        clip = make_separation_clip(seed, cfg)
        env = [envelope(s)[: clip.num_frames] for s in clip.sources]
        for k in range(2):
            opening = clip.mouth[:, k, 0]
            own.append(np.corrcoef(opening, env[k])[0, 1])
            other.append(np.corrcoef(opening, env[1 - k])[0, 1])
            px = _mouth_contrast(clip, k)
            own_px.append(np.corrcoef(px, env[k])[0, 1])
            other_px.append(np.corrcoef(px, env[1 - k])[0, 1])
    own_px, other_px = np.array(own_px), np.array(other_px)
    print(f"lip-envelope corr: params own {np.mean(own):.2f} other {np.mean(other):.2f}; "
          f"pixels own {own_px.mean():.2f} other {other_px.mean():.2f}")
    assert np.mean(own) > 0.7 and np.mean(other) < 0.3
    assert own_px.mean() > 0.4 and other_px.mean() < 0.2
    assert np.mean(own_px > other_px) >= 0.8


@needs_data
def test_photo_faces_open_their_mouths_and_are_detected():
    from lab.corpus.photo_faces import open_mouth, photo_files, photos
    from engines.faces import FaceDetector

    train, ev = photo_files(TRAIN), photo_files(EVAL)
    assert len(train) >= 40 and len(ev) >= 12 and not set(train) & set(ev)
    usable = photos(EVAL)
    assert len(usable) >= 10
    p = usable[0]
    closed, opened = open_mouth(p, 0.0, 0.5), open_mouth(p, 1.0, 0.5)
    x0, y0, x1, y1 = p.box.astype(int)
    diff = np.abs(closed.astype(int) - opened.astype(int)).sum(2)
    ys, xs = np.nonzero(diff > 30)
    assert len(ys) > 0.01 * (x1 - x0) * (y1 - y0), "opening the mouth must change the face"
    assert ys.min() > y0 + 0.45 * (y1 - y0), "only the lower face moves"
    clip = make_separation_clip(3, replace(SEP, split=EVAL, photo_prob=1.0, duration_s=1.0))
    assert all(f.startswith("photo:") for f in clip.meta["faces"])
    detector = FaceDetector()
    hits = total = 0
    for t in range(0, clip.num_frames, 5):
        d = detector.detect(clip.frames[t])
        for g in clip.boxes[t]:
            total += 1
            cx, cy = (d.boxes[:, 0] + d.boxes[:, 2]) / 2, (d.boxes[:, 1] + d.boxes[:, 3]) / 2
            hits += bool(np.any((cx > g[0]) & (cx < g[2]) & (cy > g[1]) & (cy < g[3])))
    assert hits / total >= 0.9
