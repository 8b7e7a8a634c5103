"""Does a lone voice pass a separator nearly unchanged? Drawn faces and real faces, any checkpoint.

    python -m lab.real_faces.lone_voice                                    # the shipped separator
    python -m lab.real_faces.lone_voice --weights out/real_faces/separator/av_ao/best.pt

Why: a separator that isolates a face's voice must leave that voice alone when nobody else speaks. A face
the lip encoder does not know (a drawn one: the demo's, and the CI test's) is where it fails first: the
session-7 candidate `av_ao` took a drawn face's lone voice down to 1.8 dB of SI-SDR against its input.
Rows: the generated one-face clips of `DRAWN_SEEDS` (the config of `tests/test_separation.py::
test_single_voice_passes_nearly_unchanged`, whose clip is seed 7; training leaves these seeds out), and one
clip per validation unit of the real faces (`VALIDATION_IDS`, never the test identities). The figures are
SI-SDR of the output against the input (higher: less changed) and the output's level re. the input
(`voice_gain_db`; 0 dB: the voice keeps its loudness — SI-SDR is blind to a voice handed back quieter).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from lab.real_faces.generated_units import DRAWN_SEEDS

REAL_CLIPS = 12


def drawn_clip(seed: int):
    from lab.corpus.generate import default_config, make_clip

    config = replace(default_config("separation"), num_speakers=(1,), include_librispeech=False, noise_prob=0.0,
                     photo_prob=0.0, degrade=False, duration_s=2.0, width=640, height=360)
    return make_clip("separation", seed, config)


def lone_voice(weights: Path | None, real: int = REAL_CLIPS) -> dict:
    from lab.real_faces.face_tracks import VALIDATION_IDS
    from lab.real_faces.train_separator import face_units, voice_gain_db
    from lab.separation.eval_separator import separate_av, si_sdr
    from lab.separation.separation_samples import face_lip_streams

    if weights is None:
        from engines.separation.shipped_separator import av

        model = av()
    else:
        from engines.separation.crn_model import load_checkpoint

        model = load_checkpoint(weights).model().eval()

    def passed(mixture: np.ndarray, lips: np.ndarray) -> tuple[float, float]:
        """(SI-SDR of the output against the input, the output's level re. the input) in dB."""
        out = separate_av(model, mixture, lips)[0]
        return round(float(si_sdr(out[None], mixture[None])[0]), 2), round(voice_gain_db(out, mixture), 2)

    drawn, drawn_gain = {}, []
    for seed in DRAWN_SEEDS:
        clip = drawn_clip(seed)
        drawn[seed], gain = passed(clip.mixture, face_lip_streams(clip)[0])
        drawn_gain.append(gain)
    units = face_units(VALIDATION_IDS)
    pick = np.linspace(0, len(units) - 1, min(real, len(units))).round().astype(int)
    real_db, real_gain = zip(*(passed(units[i].audio, units[i].emb[None]) for i in pick))
    return {"weights": str(weights) if weights else "shipped", "drawn_seeds": drawn,
            "drawn_median": float(np.median(list(drawn.values()))), "drawn_gain_db_median": float(np.median(drawn_gain)),
            "real_validation": list(real_db), "real_mean": round(float(np.mean(real_db)), 2),
            "real_min": float(np.min(real_db)), "real_gain_db_median": float(np.median(real_gain))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.real_faces.lone_voice", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="a separator checkpoint (.pt); default: shipped")
    p.add_argument("--real", type=int, default=REAL_CLIPS, help="validation real-face clips")
    args = p.parse_args(argv)
    print(json.dumps(lone_voice(args.weights, args.real), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
