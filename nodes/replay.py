"""Replay: a recording (`launch.py run --record`) fed back into a graph, as its sources.

open the MCAP file → loop: the next recorded message of a wanted topic, held until its time comes
(its capture time since the recording's first message, paced like a file source: the wall clock,
or in lossless mode the slowest reader) → sent on the port its topic maps to → close.

A recorded message is decoded by the same `decode` as live traffic, so a recording is no way around
the schema checks. Capture times are re-based on this run's epoch, so latency figures stay true.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import recording
from pipeline.messages import (AudioChunk, EndOfStream, Embedding, FaceTracks, FeatureMap, Heatmap, MessageError,
                               SeparatedAudio, Spectrogram, VideoFrame, decode)
from pipeline.node import Node, Output

#: port → the topic of the demo graph it replays by default
DEFAULT_TOPICS = {
    "frames": "camera/frames", "audio": "microphone/audio", "spectrum": "stft/spectrum", "logmel": "stft/logmel",
    "features": "visual_encoder/features", "embedding": "audio_encoder/embedding", "heatmap": "fusion/heatmap",
    "faces": "faces/faces", "voices": "separator/voices",
}


class Replay(Node):
    """Recorded topics of an MCAP file, sent again on ports named after what they carry."""

    @dataclass
    class Params:
        file: str = ""  # an MCAP file written by `launch.py run --record`
        topics: dict = field(default_factory=lambda: dict(DEFAULT_TOPICS))  # port → recorded topic

        def validate(self) -> None:
            unknown = sorted(set(self.topics) - set(Replay.outputs))
            if unknown:
                raise ValueError(f"topics: no output port(s) {unknown}; ports: {sorted(Replay.outputs)}")

    outputs = {
        "frames": Output(VideoFrame), "audio": Output(AudioChunk), "spectrum": Output(Spectrogram),
        "logmel": Output(Spectrogram), "features": Output(FeatureMap), "embedding": Output(Embedding),
        "heatmap": Output(Heatmap), "faces": Output(FaceTracks), "voices": Output(SeparatedAudio),
    }

    def open(self) -> None:
        if not Path(self.params.file).is_file():  # (here, not in validate: a config may name one to come)
            raise FileNotFoundError(f"replay: {self.params.file}: no such recording (make one with --record)")
        self.port_of = {topic: port for port, topic in self.params.topics.items()}
        self.messages: Iterator = recording.read(Path(self.params.file))
        self.first_ns: int | None = None
        self.paced_by_media = True
        self.counters.update(replayed=0, skipped=0)

    def step(self) -> bool:
        item = next(self.messages, None)
        if item is None:
            return False
        topic, capture_ns, frames = item
        port = self.port_of.get(topic)
        if port is None:
            return True
        try:
            msg = decode(frames)
        except MessageError as exc:
            self.count("skipped")
            self.log.error("%s: a recorded %s message does not decode: %s", self.params.file, topic, exc)
            return True
        if isinstance(msg, EndOfStream):
            return True  # the runtime ends each output itself when the recording runs out
        self.first_ns = capture_ns if self.first_ns is None else self.first_ns
        media_ns = max(0, capture_ns - self.first_ns)
        if not self.pace(media_ns):
            return True  # stopping
        msg.capture_ns = self.epoch_ns + media_ns
        self.send(port, msg)
        self.count("replayed")
        return True

    def summary(self) -> str:
        return f"{self.counters.get('replayed', 0)} messages replayed from {self.params.file}"
