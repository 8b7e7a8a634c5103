"""The files' clock: where a frame or an audio block captured at some instant goes in a file.

Everything is placed by capture time, so a frame and the audio captured with it line up
however late each arrived. Time zero is the graph's epoch (file sources pace from it), or
the first capture if that predates it. An audio stream is anchored once by its capture
time and then placed by sample count, which does not jitter.
"""

from __future__ import annotations

from collections.abc import Callable


class Timeline:
    """``seconds(capture_ns)`` for frames, ``place(stream, capture_ns, first_sample)`` for audio.

    ``epoch_ns`` is asked for on first use: a graph learns its epoch only when it starts.
    """

    def __init__(self, sample_rate_hz: int, epoch_ns: Callable[[], int] = lambda: 0) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._epoch_ns = epoch_ns
        self.origin_ns: int | None = None
        self._anchors: dict[str, int] = {}  # stream → its sample 0 on the timeline

    def _since_origin_ns(self, capture_ns: int) -> int:
        if self.origin_ns is None:
            epoch = self._epoch_ns() or 0
            self.origin_ns = epoch if 0 < epoch <= capture_ns else capture_ns
        return capture_ns - self.origin_ns

    def seconds(self, capture_ns: int) -> float | None:
        """A capture time on the timeline (≥ 0); None for an unstamped (capture_ns 0) item."""
        return max(self._since_origin_ns(capture_ns), 0) / 1e9 if capture_ns else None

    def place(self, stream: str, capture_ns: int, first_sample: int) -> int:
        """Where a block of ``stream`` starts on the timeline, in samples: anchored once, then counted."""
        if stream not in self._anchors:
            start = round(self._since_origin_ns(capture_ns) * self.sample_rate_hz / 1e9)
            self._anchors[stream] = start - first_sample
        return max(self._anchors[stream] + first_sample, 0)
