"""Lossless pacing: file sources in different processes advance one media clock together.

In ``pace: lossless`` a slow consumer blocks its producer (see `pipeline.transport`), so each
source runs only as fast as its slowest reader. That alone would let the cheap audio path run
seconds ahead of the expensive video path, and a node that pairs them (the separator holds the
newest lips for each STFT frame; the renderer muxes both) would pair the wrong moments. So every
file source also waits until the slowest *other* source has reached its media time, less a slack
that is about what the live graph sees between its two paths anyway.

The clock is one int64 slot per source in a small file in the run directory, mapped into each
source process: a write is one aligned 8-byte store, a read a few loads, and nothing crosses a
socket. A source that does not pace by media time (a webcam, a microphone) leaves the clock, and
a source that finished leaves it too, so nobody waits on a stream that will not advance.

A source that crashed keeps its slot where it was, so the others wait for it while it is restarted,
and :func:`resume_point` says where the restarted one goes on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: a source that no one should wait for: not paced by media time, or finished
AWAY = np.iinfo(np.int64).max
#: how far (ns) a source may run ahead of the slowest other one
DEFAULT_SLACK_NS = 200_000_000


def create(path: Path, sources: list[str]) -> None:
    """The supervisor makes the clock before any node starts: every source at media time 0."""
    np.zeros(max(1, len(sources)), np.int64).tofile(path)


def resume_point(released_ns: int, epoch_ns: int, lossless: bool, now_ns: int | None = None) -> int:
    """Where a file source restarted after a crash goes on: the first media time (ns since the
    graph's epoch) it has not released yet. ``released_ns`` is the last media time its previous
    process released (-1: none).

    Lossless: right after that, so nothing is skipped and nothing is sent twice (the other sources
    waited for it meanwhile). Realtime: where the graph's clock is now, as a live camera would be:
    what played while it was down is gone, and capture times stay on the timeline (epoch + media
    time); never at or before what it released, so capture times do not go back."""
    if lossless:
        return released_ns + 1 if released_ns >= 0 else 0
    now = time.monotonic_ns() if now_ns is None else now_ns
    return max(now - epoch_ns, released_ns + 1, 0)


class MediaClock:
    """One source's view of the shared clock."""

    def __init__(self, path: Path, sources: list[str], me: str, slack_ns: int = DEFAULT_SLACK_NS) -> None:
        self.slots = np.memmap(path, dtype=np.int64, mode="r+", shape=(max(1, len(sources)),))
        self.mine = sources.index(me)
        self.others = [i for i in range(len(sources)) if i != self.mine]
        self.slack_ns = slack_ns

    def leave(self) -> None:
        self.slots[self.mine] = AWAY

    def may_release(self, media_ns: int) -> bool:
        """Publish our progress; True once no other source is more than the slack behind it."""
        self.slots[self.mine] = media_ns
        slowest = min((int(self.slots[i]) for i in self.others), default=AWAY)
        return media_ns <= slowest + self.slack_ns if slowest != AWAY else True

    def wait(self, media_ns: int, still_running, poll_s: float = 0.001) -> bool:
        """Block until ``media_ns`` may be released; False if ``still_running()`` turned False."""
        while not self.may_release(media_ns):
            if not still_running():
                return False
            time.sleep(poll_s)
        return True
