"""The Light-ASD reference (lab/localization/light_asd.py): shapes, crop rule, and the shared weights' fit."""

import numpy as np
import pytest
import torch

from lab.corpus.data_paths import data_root
from lab.localization import light_asd


def test_encoders_give_one_row_per_video_frame():
    model = light_asd.LightAsd().eval()
    with torch.no_grad():
        v = model.visualEncoder(torch.rand(1, 7, 112, 112) * 255)
        a = model.audioEncoder(torch.randn(1, 28, 13))
        out = model.logits(v, a)
    assert v.shape == (1, 7, 128) and a.shape == (1, 7, 128) and out.shape == (1, 7)


def test_mfcc_runs_at_100_frames_per_second():
    feats = light_asd.mfcc(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32))
    assert feats.shape == (99, 13)  # 25 ms windows every 10 ms in one second


def test_face_crop_is_centred_below_the_box_centre_and_fills_gaps():
    """A white box on black: the crop (the authors' rule: 2.8 half-sizes square, from a little above the box
    centre down, centre half kept) is mostly white, and a frame without a box borrows its neighbours'."""
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[60:180, 100:220] = 255
    boxes = np.array([[100, 60, 220, 180]] * 5, np.float32)
    boxes[2] = np.nan
    crops = light_asd.face_crops([frame] * 5, boxes)
    assert crops.shape == (5, 112, 112)
    assert all(c.mean() > 200 for c in crops)
    np.testing.assert_array_equal(crops[2], crops[1])


def test_running_median_ignores_one_bad_box():
    x = np.full(20, 50.0)
    x[10] = 500.0
    assert np.all(light_asd.medfilt(x) == 50.0)


@pytest.mark.skipif(not (data_root().parent / "models" / "light-asd").is_dir(),
                    reason="../shared/models/light-asd is not here (a user's machine never has it)")
@pytest.mark.parametrize("name", light_asd.WEIGHT_FILES)
def test_shared_weights_fit_the_network_exactly(name):
    model = light_asd.LightAsd.load(name)  # strict: every tensor name and shape must match
    assert sum(p.numel() for p in model.parameters()) > 900_000
