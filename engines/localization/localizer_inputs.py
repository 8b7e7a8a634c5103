"""What the localizer's inputs must be: the one contract the nodes, the trainer and the exporter share.

A model trained on inputs cut one way and served inputs cut another fails quietly (a shifted
log-mel window or a differently resized frame still runs, it just stops matching). So the frame
size, the map's grid, the audio window and the log-mel front end are defined once, here, and the
live nodes (`nodes/visual_encoder.py`, `nodes/audio_encoder.py`) import the same functions the
training samples are cut with (`lab/localization/localization_samples.py`).
"""

from __future__ import annotations

import numpy as np

from engines.dsp import StftConfig, log_mel, stft

IMAGE_SIZE = 224
GRID = 14
WINDOW_S = 1.0
STFT = StftConfig()  # the live stft node's defaults: 16 kHz, 512/160/400, 80 mels
WINDOW_SAMPLES = int(WINDOW_S * STFT.sample_rate_hz)
#: log-mel frames in one window: 1 + (16000 − 512) // 160
WINDOW_FRAMES = 1 + (WINDOW_SAMPLES - STFT.n_fft) // STFT.hop_length


def resize_frame(frame_bgr: np.ndarray) -> np.ndarray:
    """Any frame → 224² BGR uint8: what the visual encoder node does to a camera frame."""
    import cv2  # here: the audio side (the audio encoder node) reads this module and needs no OpenCV

    return cv2.resize(frame_bgr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def window_logmel(audio: np.ndarray) -> np.ndarray:
    """The last second of ``audio`` (16 kHz) → (97, 80) log-mel, zero-padded at the start."""
    x = np.asarray(audio, np.float32)[-WINDOW_SAMPLES:]
    if x.size < WINDOW_SAMPLES:
        x = np.pad(x, (WINDOW_SAMPLES - x.size, 0))
    return log_mel(stft(x, STFT), STFT.mel_filterbank)
