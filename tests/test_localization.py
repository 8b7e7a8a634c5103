"""Localization: model shapes, attention normalisation, metrics against hand-computed cases,
baselines, and the trained model's loss (matched pairs below mismatched ones)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.localization.localizer_inputs import IMAGE_SIZE, WINDOW_FRAMES, window_logmel  # noqa: E402
from lab.localization import localization_baselines as baselines  # noqa: E402
from lab.localization import localization_losses as losses  # noqa: E402
from lab.localization import localization_metrics as metrics  # noqa: E402
from lab.localization.localization_samples import box_map  # noqa: E402
from engines.localization.localizer_model import Localizer, attention_map  # noqa: E402


@pytest.fixture(scope="module")
def model() -> Localizer:
    torch.manual_seed(0)
    return Localizer().eval()


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, 224, 224, generator=g) * 255
    return image, image.roll(3, dims=3), torch.randn(batch, WINDOW_FRAMES, 80, generator=g) - 10


# -- model ------------------------------------------------------------------------------------


def test_model_shapes(model):
    with torch.inference_mode():
        out = model(*_inputs(2))
    assert out["features"].shape == (2, 128, 14, 14)
    assert out["embedding"].shape == (2, 128)
    assert out["heatmap"].shape == out["cosine"].shape == out["weights"].shape == (2, 14, 14)
    assert out["f_v"].shape == (2, 128)


def test_attention_map_is_clipped_cosine_and_weights_sum_to_one(model):
    with torch.inference_mode():
        out = model(*_inputs(3))
    assert torch.all(out["cosine"] >= -1 - 1e-5) and torch.all(out["cosine"] <= 1 + 1e-5)
    assert torch.equal(out["heatmap"], out["cosine"].clamp(min=0))
    assert torch.all(out["heatmap"] >= 0) and torch.all(out["heatmap"] <= 1 + 1e-5)
    sums = out["weights"].sum(dim=(1, 2))
    assert torch.allclose(sums, torch.ones(3), atol=1e-4)


def test_attention_map_peaks_where_features_match_the_audio():
    features = torch.zeros(1, 4, 14, 14)
    features[0, 1] = 1.0                        # everywhere: direction 1
    features[0, :, 3, 5] = torch.tensor([0.0, 0.0, 2.0, 0.0])  # one position: direction 2
    embedding = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    cos = attention_map(features, embedding)[0]
    assert cos[3, 5] == pytest.approx(1.0)
    assert float(cos.sum()) == pytest.approx(1.0)


def test_trunk_matches_centerface_under_onnxruntime():
    """The torch rebuild of CenterFace's body (BGR in) equals ONNX Runtime on the shipped file (RGB in)."""
    import onnx
    import onnxruntime as ort

    from engines.faces.detector import prepared_model_path
    from engines.localization.face_trunk import BACKBONE, FACE_HEATMAP, FPN, FaceTrunk

    bgr = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3)) * 255
    with torch.inference_mode():
        ours = FaceTrunk()(bgr).numpy()
    model = onnx.load(str(prepared_model_path()))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in (BACKBONE, FPN))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    backbone, fpn, heat = session.run([BACKBONE, FPN, FACE_HEATMAP], {"input.1": bgr.flip(1).numpy()})
    heat = heat.reshape(2, 1, 14, 4, 14, 4).max(axis=(3, 5))
    expected = np.concatenate([backbone, fpn, heat], axis=1)
    assert ours.shape == (2, 121, 14, 14)
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=1e-4)


def test_cached_trunk_features_are_the_torch_trunk_run_through_onnxruntime(tmp_path, monkeypatch, model):
    """Training's cached features (exported trunk on ORT, float16) are what the model computes itself."""
    from lab.localization import localization_samples as data

    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path)
    images = (np.random.default_rng(5).random((3, IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype(np.uint8)
    samples = data.Samples(images, images, np.zeros((3, WINDOW_FRAMES, 80), np.float32),
                           np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8))
    data.with_trunk(samples, tmp_path / "shard.npz")
    with torch.inference_mode():
        expected = model.visual.trunk(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
        flipped = model.visual.trunk(torch.from_numpy(np.ascontiguousarray(
            images[:, :, ::-1].transpose(0, 3, 1, 2)).astype(np.float32))).numpy()
    assert samples.trunk.dtype == np.float16
    np.testing.assert_allclose(samples.trunk.astype(np.float32), expected, atol=2e-2, rtol=2e-3)
    np.testing.assert_allclose(samples.trunk_flipped.astype(np.float32), flipped, atol=2e-2, rtol=2e-3)
    again = data.Samples(images, images, samples.logmel, samples.gt)
    data.with_trunk(again, tmp_path / "shard.npz")  # second time: read from the cache file
    assert (tmp_path / f"shard.{data.TRUNK_TAG}.npz").exists()
    np.testing.assert_array_equal(again.trunk, samples.trunk)


def test_trunk_is_frozen_and_left_out_of_checkpoints(tmp_path, model):
    from engines.localization.localizer_model import TRUNK_PREFIX, Checkpoint

    assert not any(p.requires_grad for p in model.visual.trunk.parameters())
    model.train()
    assert not model.visual.trunk.training  # its batch norms keep CenterFace's statistics
    model.eval()
    Checkpoint(model.state_dict(), "supervised", {}).save(tmp_path / "m.pt")
    saved = Checkpoint.load(tmp_path / "m.pt")
    assert saved.state and not any(k.startswith(TRUNK_PREFIX) for k in saved.state)
    with torch.inference_mode():
        a = model(*_inputs(1))["cosine"]
        b = saved.model()(*_inputs(1))["cosine"]
    assert torch.allclose(a, b, atol=2e-2)  # float16 weights


def test_precomputed_trunk_features_give_the_same_map(model):
    image, previous, logmel = _inputs(2)
    with torch.inference_mode():
        trunk = model.visual.trunk(image)
        assert torch.allclose(model(image, previous, logmel)["cosine"],
                              model(image, previous, logmel, trunk)["cosine"], atol=1e-5)


# -- losses -----------------------------------------------------------------------------------


def test_infonce_prefers_aligned_pairs():
    a = torch.eye(4, 8)
    assert losses.infonce(a, a) < losses.infonce(a, a.roll(1, dims=0))


def test_supervised_loss_prefers_the_right_map():
    gt = torch.zeros(1, 224, 224, dtype=torch.uint8)
    gt[0, :, :112] = 1
    right = torch.full((1, 14, 14), -1.0)
    right[0, :, :7] = 1.0
    assert losses.supervised(right, gt) < losses.supervised(-right, gt)


def test_semisupervised_is_the_sum(model):
    with torch.inference_mode():
        out = model(*_inputs(2))
    gt = torch.zeros(2, 224, 224, dtype=torch.uint8)
    parts = losses.total("semisupervised", out, gt, lam=0.5)
    assert float(parts["loss"]) == pytest.approx(float(parts["unsup"] + 0.5 * parts["sup"]), rel=1e-6)
    with pytest.raises(ValueError):
        losses.total("nonsense", out, gt)


# -- metrics: hand-computed cases -------------------------------------------------------------


def _half(left: bool = True) -> np.ndarray:
    m = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    m[:, :112] = 1 if left else 0
    m[:, 112:] = 0 if left else 1
    return m


def test_ciou_hand_computed():
    left = _half(True)
    assert metrics.ciou(left, left) == pytest.approx(1.0)            # P = G = left half
    quarter = np.zeros_like(left)
    quarter[:, :56] = 1
    # P = left half ⊃ G: inter = 224·56, |G| = 224·56, |P \ G| = 224·56 → 1/2
    assert metrics.ciou(left, quarter) == pytest.approx(0.5)
    assert metrics.ciou(left, _half(False)) == pytest.approx(0.0)    # disjoint
    assert metrics.ciou_ceiling(quarter) == pytest.approx(0.5)       # no map does better here
    assert metrics.ciou_ceiling(np.ones_like(left)) == pytest.approx(0.5)


def test_ciou_binarises_the_top_half_after_upsampling():
    small = np.zeros((14, 14), np.float32)
    small[:, :7] = 1
    assert metrics.ciou(small, _half(True)) > 0.95
    ramp = np.tile(np.arange(224, dtype=np.float64), (224, 1))  # brighter to the right
    assert metrics.binarise_median(ramp)[:, 112:].all() and not metrics.binarise_median(ramp)[:, :112].any()


def test_auc_and_ciou05_hand_computed():
    c = np.array([1.0, 0.5, 0.0])
    # success rate: 1 at t=0, 2/3 for 0 < t ≤ 0.5, 1/3 for t > 0.5 (grid step 0.05)
    expected = 0.05 * (1 + 2 / 3) / 2 + 9 * 0.05 * 2 / 3 + 0.05 * (2 / 3 + 1 / 3) / 2 + 9 * 0.05 / 3
    assert metrics.auc(c) == pytest.approx(expected)
    assert metrics.ciou_at(c, 0.5) == pytest.approx(2 / 3)


def test_pointing_and_fixed_threshold():
    gt = _half(True)
    peak = np.zeros((14, 14), np.float32)
    peak[7, 2] = 1.0
    assert metrics.pointing_hit(peak, gt)
    assert metrics.ciou_fixed(peak, gt) == pytest.approx(1.0 * metrics.ciou_fixed(peak, gt))
    assert metrics.ciou_fixed(peak, _half(False)) == 0.0


# -- data and baselines -----------------------------------------------------------------------


def test_box_map_and_window_logmel():
    gt = box_map(np.array([[0, 0, 160, 120], [0, 0, 0, 0]], np.float32), width=320, height=240)
    assert gt.shape == (224, 224) and gt[:112, :112].all() and gt.sum() == 112 * 112
    mel = window_logmel(np.zeros(8000, np.float32))
    assert mel.shape == (WINDOW_FRAMES, 80) and np.allclose(mel, np.log(1e-10))


def test_synchrony_map_finds_the_region_moving_with_the_sound():
    rng = np.random.default_rng(0)
    envelope = rng.normal(size=25).astype(np.float32)
    history = np.zeros((26, 56, 56), np.uint8)
    level = np.zeros(26)
    for t in range(25):  # region (row 2, col 10) changes by an amount that follows the envelope
        level[t + 1] = level[t] + (envelope[t] - envelope.min() + 0.1) * 20 * (1 if t % 2 else -1)
    level -= level.min()
    history[:, 8:12, 40:44] = np.clip(level, 0, 255)[:, None, None].astype(np.uint8)
    m = baselines.synchrony_map(history, envelope)
    assert np.unravel_index(np.argmax(m), m.shape) == (2, 10)
    assert m.min() >= 0
    assert baselines.centre_prior().argmax() in (7 * 14 + 7, 6 * 14 + 6, 6 * 14 + 7, 7 * 14 + 6)


# -- the shipped, trained model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def held_out_batch():
    """12 samples from 6 fresh held-out scenes (eval speakers, seeds outside training)."""
    from dataclasses import replace

    from lab.corpus.evalset import EVAL_SEED_BASE, EVAL_SETS
    from lab.corpus.generate import make_clip
    from lab.corpus.data_paths import data_available
    from lab.localization.localization_samples import Samples, samples_from_clip

    if not data_available():
        pytest.skip("needs ../shared/data")
    config = replace(EVAL_SETS["loc2"].config, duration_s=2.0)
    seed0 = EVAL_SEED_BASE + 90_000  # not the published 'loc' set, not training
    return Samples.concat([samples_from_clip(make_clip("localization", seed0 + i, config), [30, 45]) for i in range(6)])


def test_trained_loss_is_lower_for_matched_than_mismatched_pairs(held_out_batch):
    from engines.localization.shipped_localizer import shipped_model
    from engines.localization.shipped_localizer import weights_path
    from lab.localization.train_localizer import to_batch

    model = shipped_model(weights_path("semisupervised"))  # a mode trained with the metric loss
    image, previous, logmel, _, trunk = to_batch(held_out_batch, np.arange(len(held_out_batch)))
    assert trunk is None  # fresh samples: the model runs its own trunk, as the live graph does
    with torch.inference_mode():
        out = model(image, previous, logmel)
        pair = losses.pair_losses(out["f_v"], out["embedding"])
        matched = torch.diagonal(pair)
        # a mismatched pair: the same frame with another scene's audio (other clips only)
        clip = torch.arange(len(pair)) // 2
        other = clip[:, None] != clip[None, :]
        assert float(matched.mean()) < float(pair[other].mean())
        shuffled = losses.infonce(out["f_v"], out["embedding"].roll(2, dims=0))
        assert float(losses.infonce(out["f_v"], out["embedding"])) < float(shuffled)


def test_diagnose_counts_a_peak_inside_a_face_box_in_frame_pixels() -> None:
    """`diagnose` upsamples each 14×14 map to the frame and checks its peak against the boxes."""
    from lab.localization.diagnose_localizer import peak_on_face

    maps = np.zeros((2, 14, 14), np.float32)
    maps[0, 2, 10] = 1.0  # cell (row 2, col 10) of a 1280×720 frame: x ≈ 960, y ≈ 129
    maps[1, 12, 1] = 1.0  # bottom left: outside the box
    box = np.array([[880.0, 80.0, 1040.0, 180.0]])
    assert peak_on_face(maps, [box, box], (1280, 720)).tolist() == [True, False]
    assert peak_on_face(maps[:1], [np.zeros((0, 4))], (1280, 720)).tolist() == [False]  # no face found
