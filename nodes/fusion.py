"""Fusion (localization): pair each frame's features with the audio heard up to that frame → heatmap.

Pairing is by capture time, not arrival: a frame captured at T takes the first audio embedding whose
window ends at or after T (what training paired: the second of audio up to the end of the frame).
Audio usually arrives later than video (it comes in blocks), so a frame waits for its embedding, but
never longer than ``max_wait_ms``: then it takes the newest embedding there is, and the miss is
counted. Before any audio has arrived a frame gets an all-zero map ("nothing heard").

With ``speakers`` wired (the active_speaker node's lip-sync decisions), the face whose lips move with the
voice goes on top of the map (`engines.localization.speaking_face.fuse`) and the heatmap names it: Senocak's
map finds faces but not which one is heard. The decision used is the one nearest the frame's capture time,
if within ``speaker_max_age_ms``; otherwise the map is left as it is and names no face.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from engines.loader import load
from engines.localization.speaking_face import fuse
from pipeline.messages import ActiveSpeaker, Embedding, FeatureMap, Heatmap
from pipeline.node import BadInput, Input, Node, Output


class Fusion(Node):
    """Runs the shipped ``localizer_fusion`` graph: clipped cosine of audio with each position."""

    @dataclass
    class Params:
        model: str = "localizer_fusion"
        backend: str = "auto"
        threads: int = 1
        max_wait_ms: float = 150.0  # latency bound: a late audio block must not stall the picture
        keep_s: float = 2.0          # embeddings older than this are no frame's match any more
        speaker_max_age_ms: float = 500.0  # a lip-sync decision this far from a frame's time is not its

    inputs = {
        # lossless: a frame also waits for the speaker decision of its moment (when speakers is wired)
        "features": Input(FeatureMap, policy="queue", size=8, waits_for=("embedding", "speakers")),
        "embedding": Input(Embedding, policy="queue", size=64),
        # optional; latest: the newest decision is the one that matters live (it lags the audio by ~0.2 s)
        "speakers": Input(ActiveSpeaker, policy="latest", doc="the face speaking, by lip sync (active_speaker)"),
    }
    outputs = {"heatmap": Output(Heatmap, doc="float32 (14, 14) in [0, 1] over the frame")}

    def open(self) -> None:
        self.engine = load(self.params.model, backend=self.params.backend, threads=self.params.threads)
        self.model_inputs = {t.name: t for t in self.engine.inputs}  # to refuse what the model cannot take
        self.embeddings: deque[Embedding] = deque()
        self.frames: deque[FeatureMap] = deque()
        self.speakers: deque[ActiveSpeaker] = deque(maxlen=50)  # 2 s of decisions (one per 40 ms)

    def on_message(self, port: str, msg: FeatureMap | Embedding | ActiveSpeaker) -> None:
        if port == "speakers":
            self.speakers.append(msg)
            return
        # checked on arrival: a frame or embedding the model cannot take would fail later, in tick()
        tensor = self.model_inputs[port if port == "embedding" else "features"]
        shape = (1, *(msg.vector if port == "embedding" else msg.features).shape)
        if not tensor.accepts(shape):
            raise BadInput(f"{port} of shape {shape[1:]}, the model takes {tensor.shape[1:]}")
        if port == "embedding":
            self.embeddings.append(msg)
            while self.embeddings and msg.capture_ns - self.embeddings[0].capture_ns > self.params.keep_s * 1e9:
                self.embeddings.popleft()
        else:
            self.frames.append(msg)
        self._emit_ready(force_before_ns=time.monotonic_ns() - int(self.params.max_wait_ms * 1e6))

    def tick(self) -> None:
        self._emit_ready(force_before_ns=time.monotonic_ns() - int(self.params.max_wait_ms * 1e6))

    def on_end(self) -> None:
        self._emit_ready(force_before_ns=None)  # flush: every frame gets the best audio there is

    def _emit_ready(self, force_before_ns: int | None) -> None:
        while self.frames:
            frame = self.frames[0]
            match = next((e for e in self.embeddings if e.capture_ns >= frame.capture_ns), None)
            if match is None:
                if force_before_ns is not None and frame.capture_ns > force_before_ns:
                    return  # its audio may still come
                self.count("unmatched_frames")
                match = self.embeddings[-1] if self.embeddings else None
            self.frames.popleft()
            self._send_heatmap(frame, match)

    def _send_heatmap(self, frame: FeatureMap, embedding: Embedding | None) -> None:
        if embedding is None:
            heatmap = np.zeros(frame.features.shape[1:], np.float32)
        else:
            heatmap = self.engine.run({"features": frame.features[None].astype(np.float32),
                                       "embedding": embedding.vector[None].astype(np.float32)})["heatmap"][0]
        heatmap = np.clip(heatmap, 0.0, 1.0)
        speaking = self._speaker_at(frame.capture_ns)
        if speaking is not None:  # the face heard goes on top
            box = speaking.boxes[speaking.track_ids.tolist().index(speaking.speaking_track_id)]
            heatmap = fuse(heatmap, box, (speaking.frame_width, speaking.frame_height))
        self.send("heatmap", Heatmap(heatmap=heatmap, frame_index=frame.frame_index, capture_ns=frame.capture_ns,
                                     speaking_track_id=speaking.speaking_track_id if speaking else -1,
                                     speaking_score=speaking.speaking_score if speaking else 0.0))

    def _speaker_at(self, capture_ns: int) -> ActiveSpeaker | None:
        """The lip-sync decision nearest the frame's moment, if it is near enough and names a face."""
        nearest = min(self.speakers, key=lambda s: abs(s.capture_ns - capture_ns), default=None)
        if nearest is None or abs(nearest.capture_ns - capture_ns) > self.params.speaker_max_age_ms * 1e6:
            return None
        return nearest if nearest.speaking_track_id >= 0 else None

    def close(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
