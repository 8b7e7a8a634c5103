"""The speech pack (Opus groups that travel to a lent GPU) and the mixtures made from it on the device."""

import numpy as np
import pytest
import torch

from lab.separation import speech_pack
from lab.separation.pack_mixer import PackMixer, _Flat, reverberate, room_tails
from lab.separation.speech_pack import RATE, Item


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed)
    return (np.sin(2 * np.pi * f0 * t) * env * 0.3).astype(np.float32)


def _items(prefix: str, talkers: int, per: int) -> list[Item]:
    return [Item(f"{prefix}{k}", f"{k}-{u}", _voice(1.5 + 0.5 * u, 110 + 40 * k + 7 * u, k * 10 + u))
            for k in range(talkers) for u in range(per)]


def test_pack_round_trip_keeps_items_apart_and_pairs_in_ratio(tmp_path):
    pair = [Item("a", "0a", _voice(2.0, 140, 0)), Item("b", "0b", 0.4 * _voice(2.0, 220, 1))]
    groups = {"libri_train": _items("L", 3, 2), "val_pairs": pair}
    speech_pack.write(tmp_path, groups)
    back = speech_pack.load(tmp_path)
    assert [len(i.audio) for i in back["libri_train"]] == [len(i.audio) for i in groups["libri_train"]]
    assert [i.speaker for i in back["libri_train"]] == [i.speaker for i in groups["libri_train"]]
    for orig, got in zip(groups["libri_train"], back["libri_train"]):  # lossy, but the same sound, peak ~0.5
        corr = np.corrcoef(orig.audio, got.audio)[0, 1]
        assert corr > 0.8, corr
        assert 0.3 < np.abs(got.audio).max() < 0.7
    (mix, refs), = speech_pack.validation_pairs(back["val_pairs"])
    np.testing.assert_allclose(mix, refs.sum(0))
    ratio = np.abs(refs[1]).max() / np.abs(refs[0]).max()
    want = np.abs(groups["val_pairs"][1].audio).max() / np.abs(groups["val_pairs"][0].audio).max()
    assert ratio == pytest.approx(want, rel=0.15)  # not normalised item by item


def test_pack_mixer_batches_are_the_sum_of_their_sources():
    libri, vox = _items("L", 4, 2), _items("V", 3, 2)
    noise = [Item("n", "n", np.random.default_rng(0).normal(0, 0.1, 3 * RATE).astype(np.float32))]
    mixer = PackMixer(libri, vox, noise, "cpu", vox_share=0.5, seed=1)
    mix, ref = mixer.batch(16, RATE, one_voice=0.0)
    assert mix.shape == (16, RATE) and ref.shape == (16, 2, RATE)
    assert torch.isfinite(mix).all() and torch.isfinite(ref).all()
    peak = mix.abs().amax(-1)
    assert (peak > 10 ** (-31 / 20)).all() and (peak < 10 ** (-11 / 20)).all()
    residual = mix - ref.sum(1)  # the noise, on about half the rows; zero on the rest
    clean = residual.abs().amax(-1) < 1e-6
    assert 2 <= int(clean.sum()) <= 14
    level_db = 10 * torch.log10(ref[:, 1].pow(2).mean(-1) / ref[:, 0].pow(2).mean(-1))
    assert (level_db.abs() <= 5.01).all()  # the second talker −5…+5 dB re. the first
    lone_mix, lone_ref = mixer.batch(8, RATE, one_voice=1.0)
    assert (lone_ref[:, 1] == 0).all() and (lone_ref[:, 0].abs().amax(-1) > 0).all()


def test_speed_perturbation_plays_a_crop_faster_or_slower():
    """A 500 Hz tone read at rate 1.1 comes out at 550 Hz; rate 1 reads the samples unchanged."""
    tone = np.sin(2 * np.pi * 500 * np.arange(4 * RATE) / RATE).astype(np.float32)
    flat = _Flat([tone], torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    which = torch.zeros(2, dtype=torch.long)
    x = flat.crops(which, RATE, 1, gen, torch.tensor([1.0, 1.1]))
    peak_hz = torch.fft.rfft(x).abs().argmax(-1)  # 1 s crops: bin k is k Hz
    assert peak_hz.tolist() == [500, 550]
    noise = torch.randn(4 * RATE, generator=gen)  # rate 1: a plain slice of the utterance
    plain = _Flat([noise.numpy()], torch.device("cpu")).crops(which[:1], RATE, 1, gen, torch.tensor([1.0]))[0]
    start = int(torch.nonzero(noise == plain[0]).flatten()[0])
    assert torch.equal(plain, noise[start:start + RATE])
    plain = _Flat([noise.numpy()], torch.device("cpu")).crops(which[:1], RATE, 1, gen)[0]  # no rate: the same
    start = int(torch.nonzero(noise == plain[0]).flatten()[0])
    assert torch.equal(plain, noise[start:start + RATE])


def test_simulated_rooms_add_a_decaying_tail_and_keep_the_mixture_the_sum_of_its_sources():
    gen = torch.Generator().manual_seed(3)
    rir = room_tails(4, 2, gen, torch.device("cpu"))
    assert (rir[..., 0] == 1).all() and (rir[..., 1:40] == 0).all()  # the direct sound, then 2.5 ms of nothing
    tail_db = 10 * torch.log10(rir[..., 1:].pow(2).sum(-1))
    assert (tail_db <= 0.01).all() and (tail_db >= -12.01).all()
    late = rir[..., RATE // 4:].pow(2).sum(-1) / rir[..., 1:].pow(2).sum(-1)
    assert (late < 0.2).all()  # most of the tail's energy comes early: it decays
    click = torch.zeros(4, 2, 8000)
    click[..., 100] = 1
    wet = reverberate(click, rir)
    assert torch.allclose(wet[..., 100:], rir[..., :7900], atol=1e-5) and wet[..., :100].abs().max() < 1e-5
    libri, vox = _items("L", 4, 2), _items("V", 3, 2)
    mixer = PackMixer(libri, vox, [], "cpu", vox_share=0.5, seed=1, speed=0.1, rooms=1.0)
    mix, ref = mixer.batch(8, RATE)
    assert torch.isfinite(mix).all()
    noiseless = (mix - ref.sum(1)).abs().amax(-1) < 1e-6
    assert noiseless.any()  # where no noise was added, the mixture is exactly its (reverberant) sources


def test_pack_mixer_never_pairs_a_talker_with_themself():
    mixer = PackMixer(_items("L", 2, 3), _items("V", 1, 3), [], "cpu", vox_share=0.5, seed=2)
    items = mixer.domains
    owner = {int(i): (d, t) for d, talkers in enumerate(items) for t, idx in enumerate(talkers) for i in idx}
    pairs = mixer._talkers(200)
    assert all(owner[int(a)] != owner[int(b)] for a, b in pairs)
    domains = {owner[int(i)][0] for i in pairs.flatten()}
    assert domains == {0, 1}  # both LibriSpeech and VoxCeleb voices are drawn


def test_audio_pretrain_trains_from_a_pack_and_keeps_the_best_on_real_pairs(tmp_path, monkeypatch):
    from engines.separation import crn_model
    from lab.separation import audio_pretrain

    pack = tmp_path / "pack"
    pair = [Item("a", "0a", _voice(2.0, 140, 0)), Item("b", "0b", 0.7 * _voice(2.0, 230, 1))]
    groups = {"libri_train": _items("L", 3, 2), "libri_held": _items("H", 2, 2), "vox_train": _items("V", 2, 2),
              "noise_train": [Item("n", "n", np.random.default_rng(0).normal(0, 0.1, 3 * RATE).astype(np.float32))],
              "val_pairs": pair}
    speech_pack.write(pack, groups)
    monkeypatch.setattr(audio_pretrain, "RUN_DIR", tmp_path / "runs")
    audio_pretrain.main(["--run", "t", "--pack", str(pack), "--minutes", "0.01", "--batch-size", "2",
                         "--channels", "8,8,8,8", "--time-hidden", "8", "--one-voice", "0.5"])
    run = tmp_path / "runs" / "t"
    best = crn_model.load_checkpoint(run / "best.pt")
    assert best.config.channels == (8, 8, 8, 8) and best.config.time_hidden == 8
    assert "real_validation_si_sdri" in best.info and best.info["step"] >= 1
    rows = (run / "curve.csv").read_text().split()
    assert len(rows[-1].split(",")) == 7  # step, time, loss, LibriSpeech validation, one voice ×2, real pairs
    audio_pretrain.main(["--run", "t", "--pack", str(pack), "--minutes", "0.02", "--batch-size", "2", "--resume",
                         "--channels", "8,8,8,8", "--time-hidden", "8"])  # goes on from its state
    later = (run / "curve.csv").read_text().split()
    assert len(later) == len(rows) + 1 and int(later[-1].split(",")[0]) > int(rows[-1].split(",")[0])


def test_a_missing_pack_names_the_command_that_builds_it(tmp_path):
    with pytest.raises(SystemExit, match=r"SPEECH PACK MISSING: .*index\.json .*speech_pack"):
        speech_pack.load(tmp_path / "nowhere")
