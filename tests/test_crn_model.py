"""The frequency-aware CRN separator (issue 16 experiment): causal, streamable, and starts as a fair split."""

import torch

from lab.separation.audio_pretrain import pit_si_sdr, separate
from engines.separation.crn_model import CrnConfig, CrnSeparator


def NO_LIPS(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0], x.shape[1], 0)


def _model() -> CrnSeparator:
    torch.manual_seed(0)
    return CrnSeparator().eval()


def test_outputs_before_a_frame_do_not_depend_on_it():
    model = _model()
    x = torch.randn(1, 40, 257, 2)
    y = x.clone()
    y[:, 25:] = torch.randn_like(y[:, 25:])
    with torch.no_grad():
        a, _, _ = model(x, NO_LIPS(x), *model.initial_state(1))
        b, _, _ = model(y, NO_LIPS(y), *model.initial_state(1))
    assert torch.equal(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_streaming_in_uneven_chunks_equals_one_offline_call():
    model = _model()
    x = torch.randn(2, 45, 257, 2)
    with torch.no_grad():
        offline, _, _ = model(x, NO_LIPS(x), *model.initial_state(2))
        (vis, state), parts = model.initial_state(2), []
        for start, stop in ((0, 1), (1, 8), (8, 9), (9, 30), (30, 45)):
            out, vis, state = model(x[:, start:stop], NO_LIPS(x[:, start:stop]), vis, state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), offline, atol=1e-5, rtol=1e-4)


def test_untrained_model_hands_each_output_about_half_the_mixture():
    """The head starts near mask 1/2 per output, so training starts from "share it", not from silence."""
    model = _model()
    wave = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        out = separate(model, wave)
    inner = slice(800, -800)  # away from the ISTFT's edges
    for k in range(2):
        ratio = (out[:, k, inner].std() / wave[:, inner].std()).item()
        assert 0.35 < ratio < 0.65, (k, ratio)
    assert -pit_si_sdr(out.sum(1, keepdim=True).expand(-1, 2, -1)[:, :, inner],
                       wave[:, None, inner].expand(-1, 2, -1)).item() < -10  # the two shares add up to it


def test_pit_score_takes_the_better_assignment():
    ref = torch.randn(1, 2, 8000)
    swapped = ref.flip(1)
    assert torch.allclose(pit_si_sdr(swapped, ref), pit_si_sdr(ref, ref))
    assert pit_si_sdr(ref, ref).item() > 60


def test_av_model_streams_like_offline_and_its_face_starts_silent():
    """The AV variant carries its lip history too; its face projections start at zero, so before training
    the face changes nothing (an AV model started from an audio-only one begins as that model)."""
    torch.manual_seed(1)
    model = CrnSeparator(CrnConfig(n_masks=1, lip_dim=8)).eval()
    x, lips = torch.randn(2, 30, 257, 2), torch.randn(2, 30, 8)
    with torch.no_grad():
        offline, _, _ = model(x, lips, *model.initial_state(2))
        blank, _, _ = model(x, torch.zeros_like(lips), *model.initial_state(2))
        (vis, state), parts = model.initial_state(2), []
        for start, stop in ((0, 3), (3, 4), (4, 30)):
            out, vis, state = model(x[:, start:stop], lips[:, start:stop], vis, state)
            parts.append(out)
        torch.testing.assert_close(torch.cat(parts, 1), offline, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(blank, offline)
        for layer in model.lip_in:
            layer.weight.normal_()
        moved, _, _ = model(x, lips, *model.initial_state(2))
    assert not torch.allclose(moved, offline)


def test_output_gain_scales_every_mask_and_nothing_else():
    """The make-up gain set by calibration multiplies the masks; the state the network carries is the same."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = CrnSeparator(CrnConfig(n_masks=1, lip_dim=8)).eval()
    louder = CrnSeparator(replace(model.config, output_gain=2.0)).eval()
    louder.load_state_dict(model.state_dict())
    x, lips = torch.randn(1, 12, 257, 2), torch.randn(1, 12, 8)
    with torch.no_grad():
        mask, vis, state = model(x, lips, *model.initial_state(1))
        mask2, vis2, state2 = louder(x, lips, *louder.initial_state(1))
    assert torch.allclose(mask2, 2 * mask, atol=1e-6)
    assert torch.equal(vis2, vis) and torch.equal(state2, state)


def test_pit_loss_is_uPIT_for_two_voices_and_anchors_the_level_for_one():
    """Two voices: the loss is −(best-assignment SI-SDR), as the audio-only networks were trained. One voice (the
    second source silent): the output holding the voice is scored by SNR, so turning it down costs (−SI-SDR would
    not see it), and the other output by its level re. the mixture, floored at −30 dB; either output order."""
    from lab.separation.audio_pretrain import pit_loss

    torch.manual_seed(0)
    a, b = torch.randn(1, 8000), torch.randn(1, 8000)
    est = torch.stack([b + 0.1 * torch.randn(1, 8000), a + 0.1 * torch.randn(1, 8000)], dim=1)
    ref = torch.stack([a, b], dim=1)
    assert torch.allclose(pit_loss(est, ref, a + b), -pit_si_sdr(est, ref), atol=1e-4)

    one = torch.stack([a, torch.zeros_like(a)], dim=1)
    right = pit_loss(torch.stack([torch.zeros_like(a), a], dim=1), one, a)
    assert right < (-60 - 30) / 2  # a perfect voice (far past 60 dB SNR) beside an output at the −30 dB floor
    swapped = pit_loss(torch.stack([a, torch.zeros_like(a)], dim=1), one, a)
    assert torch.allclose(swapped, right), "either output may hold the voice"
    quiet = pit_loss(torch.stack([0.3 * a, torch.zeros_like(a)], dim=1), one, a)
    assert quiet > right + 30, "a voice turned down 10 dB is a worse answer"
    leaky = pit_loss(torch.stack([a, 0.3 * a], dim=1), one, a)
    assert leaky > right + 5, "the silent output's leak is penalised"
