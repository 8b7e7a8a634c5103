"""The files' clock: where a frame or an audio block captured at some instant goes in a file.

Everything is placed by capture time, so a frame and the audio captured with it line up
however late each arrived. Time zero is the graph's epoch (file sources pace from it), or
the first capture if that predates it. An audio stream is anchored once by its capture
time and then placed by sample count, which does not jitter, as long as count and capture
time agree: a block whose count puts it more than ``REANCHOR_S`` away from its capture time
anchors the stream again. That is a sender that was restarted and counts afresh (the STFT's
frames, and so the separator's samples, start again at 0), or clocks that drifted apart over
hours; placed by the old anchor, everything after would land that far off in the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: the furthest a block may jump ahead of what is placed (or of the wall clock), in seconds: a
#: bigger jump is a forged or broken stamp, and the writers would fill it with silence
MAX_JUMP_S = 60.0
#: how far (s) an audio block's place by sample count may be from its capture time before the
#: stream is anchored again on the capture time (jitter of a capture stamp is milliseconds)
REANCHOR_S = 1.0


class Timeline:
    """``seconds(capture_ns)`` for frames, ``place(stream, capture_ns, first_sample)`` for audio.

    ``epoch_ns`` is asked for on first use: a graph learns its epoch only when it starts.
    """

    def __init__(self, sample_rate_hz: int, epoch_ns: Callable[[], int] = lambda: 0) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._epoch_ns = epoch_ns
        self.origin_ns: int | None = None
        self._anchors: dict[str, int] = {}  # stream → its sample 0 on the timeline
        self.frontier_s = 0.0  # the latest time placed
        self.audio_end: dict[str, int] = {}  # stream → the stream sample after its last block

    def _since_origin_ns(self, capture_ns: int) -> int:
        if self.origin_ns is None:
            epoch = self._epoch_ns() or 0
            self.origin_ns = epoch if 0 < epoch <= capture_ns else capture_ns
        return capture_ns - self.origin_ns

    def seconds(self, capture_ns: int) -> float | None:
        """A capture time on the timeline (≥ 0); None for an unstamped (capture_ns 0) item."""
        return max(self._since_origin_ns(capture_ns), 0) / 1e9 if capture_ns else None

    def place(self, stream: str, capture_ns: int, first_sample: int) -> int:
        """Where a block of ``stream`` starts on the timeline, in samples: anchored, then counted
        (anchored again when the count strays from the capture time: a restarted sender)."""
        start = round(self._since_origin_ns(capture_ns) * self.sample_rate_hz / 1e9)
        anchor = self._anchors.get(stream)
        if anchor is None or abs(anchor + first_sample - start) > REANCHOR_S * self.sample_rate_hz:
            self._anchors[stream] = anchor = start - first_sample
            self.audio_end.pop(stream, None)  # its count started again: the old end says nothing of it
        return max(anchor + first_sample, 0)

    def span_s(self, stream: str, capture_ns: int, first_sample: int, n_samples: int) -> tuple[float, float] | None:
        """Where ``n_samples`` of ``stream`` from ``first_sample`` lie on the timeline, in seconds, as
        :meth:`place` would put them, but without anchoring the stream: for marking an audio gap (audio
        that never came). None when neither an anchor nor a capture time places it."""
        anchor = self._anchors.get(stream)
        by_capture = round(self._since_origin_ns(capture_ns) * self.sample_rate_hz / 1e9) if capture_ns else None
        if anchor is not None and (by_capture is None or
                                   abs(anchor + first_sample - by_capture) <= REANCHOR_S * self.sample_rate_hz):
            start = anchor + first_sample
        elif by_capture is not None:
            start = by_capture
        else:
            return None
        start = max(start, 0)
        return start / self.sample_rate_hz, (start + max(n_samples, 0)) / self.sample_rate_hz

    def admit(self, stream: str, capture_ns: int, first_sample: int | None = None, sample_rate_hz: int = 0) -> None:
        """Raise ValueError for what would poison the files or every later item: a time far ahead of
        the rest (or before the graph began), an audio jump the writers would fill with hours of
        silence. Audio (``first_sample`` given) is judged by its sample count once anchored."""
        if first_sample is not None:
            if not capture_ns:
                raise ValueError(f"{stream}: audio without a capture time cannot be placed")
            end = self.audio_end.get(stream)
            if end is not None:
                if first_sample - end > MAX_JUMP_S * sample_rate_hz:
                    raise ValueError(f"{stream} jumps {first_sample - end} samples past its end, more than {MAX_JUMP_S:g} s")
                return
        if not capture_ns:
            return
        epoch = self._epoch_ns() or 0
        if capture_ns < epoch - MAX_JUMP_S * 1e9:
            raise ValueError(f"{stream} captured {(epoch - capture_ns) / 1e9:.0f} s before the graph started")
        t = self.seconds(capture_ns)
        frontier = max(self.frontier_s, (time.monotonic_ns() - epoch) / 1e9)
        if t > frontier + MAX_JUMP_S:
            raise ValueError(f"{stream} at {t:.0f} s on the timeline, more than {MAX_JUMP_S:g} s ahead of {frontier:.0f} s")
        self.frontier_s = max(self.frontier_s, t)

    def placed(self, stream: str, first_sample: int, n_samples: int) -> None:
        """Note an audio block's end (a block far behind cannot pull it back)."""
        end = first_sample + n_samples
        self.audio_end[stream] = max(end, self.audio_end.get(stream, end))
