"""Exponential backoff for things that fail and come back: cameras, microphones, streams."""

from __future__ import annotations

import time


class Backoff:
    """When to try again: ``initial_s`` after the first failure, doubling up to ``max_s``.

    A device node asks ``due()`` before reopening; while it is not due, it sleeps in short
    slices (``wait_slice_ns``) so its heartbeats keep flowing and the graph sees it alive.
    """

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.delay_s = initial_s
        self.retry_at_ns = 0
        self.failures = 0  # consecutive

    def due(self) -> bool:
        return time.monotonic_ns() >= self.retry_at_ns

    def wait_slice_ns(self, slice_s: float = 0.1) -> int:
        """The monotonic time to sleep until: the retry time, or one slice, whichever first."""
        return min(self.retry_at_ns, time.monotonic_ns() + round(slice_s * 1e9))

    def failed(self) -> float:
        """Schedule the next try; returns how long until then (seconds)."""
        delay = self.delay_s
        self.failures += 1
        self.retry_at_ns = time.monotonic_ns() + round(delay * 1e9)
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return delay

    def succeeded(self) -> None:
        self.delay_s, self.failures = self.initial_s, 0
