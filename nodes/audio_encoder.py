"""AudioEncoder: the last second of log-mel → one embedding, every ``hop_frames`` STFT frames.

The stft node computes the log-mel once (the same `engines.dsp` front end training used); this node
keeps the newest 97 frames (1 s) and runs the ``localizer_audio`` graph on them. Before a full second
has arrived the window is padded with the log-mel of silence, as `window_logmel` pads a short clip. A
message carrying many frames yields one embedding (of its newest window): a fresher one would be
replaced by the next before anyone could use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.loader import load
from engines.localization.localizer_inputs import STFT, WINDOW_FRAMES, WINDOW_S
from pipeline.messages import Embedding, Spectrogram
from pipeline.node import BadInput, Input, Node, Output

#: log-mel of digital silence: ln of the 1e-10 floor of `engines.dsp.log_mel`
SILENCE = float(np.log(1e-10))


class AudioEncoder(Node):
    """Runs the shipped ``localizer_audio`` ONNX graph (engine layer) on a sliding 1 s window."""

    @dataclass
    class Params:
        model: str = "localizer_audio"
        backend: str = "auto"
        threads: int = 1
        hop_frames: int = 4  # 40 ms: one embedding per video frame at 25 fps

        def validate(self) -> None:
            if self.hop_frames < 1:
                raise ValueError(f"hop_frames must be ≥ 1, got {self.hop_frames}")

    inputs = {"logmel": Input(Spectrogram, policy="queue", size=64)}
    outputs = {"embedding": Output(Embedding, doc="float32 (128,) for the 1 s window ending at capture_ns")}

    def open(self) -> None:
        self.engine = load(self.params.model, backend=self.params.backend, threads=self.params.threads)
        self.window = np.full((WINDOW_FRAMES, STFT.n_mels), SILENCE, np.float32)
        self.frames_since_run = 0

    def on_message(self, port: str, spec: Spectrogram) -> None:
        if spec.kind != "logmel" or spec.frames.shape[1] != STFT.n_mels or spec.hop_length != STFT.hop_length:
            raise BadInput(f"expected {STFT.n_mels}-bin log-mel at hop {STFT.hop_length}, got {spec.kind} "
                           f"{spec.frames.shape} at hop {spec.hop_length}")
        new = spec.frames[-WINDOW_FRAMES:]
        self.window = np.concatenate([self.window[len(new):], new])
        self.frames_since_run += len(spec.frames)
        if self.frames_since_run < self.params.hop_frames:
            return
        self.frames_since_run = 0
        embedding = self.engine.run({"logmel": self.window[None]})["embedding"][0]
        self.send("embedding", Embedding(vector=embedding, window_s=WINDOW_S, capture_ns=spec.capture_ns))

    def close(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
