"""Streaming dataset: worker sharding covers every seed once, and matches direct generation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lab.corpus.dataset import ClipStream
from lab.corpus.evalset import EVAL_SEED_BASE
from lab.corpus.separation_scenes import SeparationConfig, make_separation_clip
from lab.corpus.speech import espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (apt-get install espeak-ng)")

CFG = SeparationConfig(include_librispeech=False, duration_s=0.8, width=160, height=96, check_detectable=False,
                       photo_prob=0.0)


def test_two_workers_yield_each_seed_once_and_same_clips():
    stream = ClipStream("separation", CFG, base_seed=100, num_clips=4)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    items = list(loader)
    assert sorted(item["seed"] for item in items) == [100, 101, 102, 103]
    direct = make_separation_clip(102, CFG)
    got = next(i for i in items if i["seed"] == 102)
    assert torch.equal(got["mixture"], torch.from_numpy(direct.mixture))
    assert got["frames"].shape == (20, 96, 160, 3)


def test_training_stream_refuses_eval_seeds():
    with pytest.raises(ValueError):
        ClipStream("separation", CFG, base_seed=EVAL_SEED_BASE - 1, num_clips=5)


def test_cli_says_clearly_when_shared_data_is_missing(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "EARSHOT_DATA": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, "-c", "import sys; from lab.corpus.corpus_cli import main; "
                           "sys.exit(main(['make-data', '--num', '1', '--out', sys.argv[1]]))", str(tmp_path / "out")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "needed data not found" in proc.stderr and "EARSHOT_DATA" in proc.stderr
