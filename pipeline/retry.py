"""Exponential backoff for things that fail and come back: cameras, microphones, streams.

``Backoff`` says when to try again; ``Reconnecting`` is the whole reconnect loop of a
source node's device, so each node keeps only how to open and read its own device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Device = TypeVar("Device")
Result = TypeVar("Result")


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


class Reconnecting(Generic[Device]):
    """A source node's device that fails and comes back (a camera unplugged, a stream that
    drops, a sound server that restarts), written once for every such node.

    The node says what its device is: ``open_device()`` returns it or raises one of
    ``errors`` (with a message that names it), ``close_device(device)`` releases it. This
    decides when: ``read`` opens the device once the backoff allows, counts each failure
    (``open_failures``, ``disconnects``), logs one clear line with the wait, reopens with
    exponential backoff and meanwhile sleeps in short slices, so the node's heartbeats keep
    flowing and ``connected`` (0 or 1) says how it is. The node never dies of its device; it
    stops only after ``give_up_after`` consecutive failed opens (0 = never).
    """

    def __init__(self, node: Any, what: str, open_device: Callable[[], Device],
                 close_device: Callable[[Device], object], errors: tuple[type[Exception], ...],
                 initial_s: float, max_s: float, give_up_after: int = 0) -> None:
        self.node, self.what = node, what  # what: "camera", "microphone": for log lines
        self.open_device, self.close_device, self.errors = open_device, close_device, errors
        self.backoff = Backoff(initial_s, max_s)
        self.give_up_after = give_up_after
        self.device: Device | None = None
        self.gave_up = False
        node.counters.update(connected=0, open_failures=0, disconnects=0)

    def read(self, read: Callable[[Device], Result]) -> Result | None:
        """``read(device)`` on the open device, (re)opening it first when due; None while
        there is no device (waiting, or a read that failed: that is a disconnect)."""
        if self.device is None and not self._connect():
            return None
        try:
            result = read(self.device)
        except self.errors as exc:
            self.node.count("disconnects")
            self._retry_later(f"{self.what} lost: {exc}")
            return None
        self.backoff.succeeded()  # it works: forget old failures
        return result

    def close(self) -> None:
        if self.device is not None:
            device, self.device = self.device, None
            self.close_device(device)

    def _connect(self) -> bool:
        if not self.backoff.due():
            self.node.sleep_until(self.backoff.wait_slice_ns())
            return False
        try:
            self.device = self.open_device()
        except self.errors as exc:
            self.node.count("open_failures")
            attempts = self.backoff.failures + 1
            if self.give_up_after and attempts >= self.give_up_after:
                self.node.log.error("%s; giving up after %d attempts", exc, attempts)
                self.gave_up = True
            else:
                self._retry_later(str(exc))
            return False
        self.node.counters["connected"] = 1
        return True

    def _retry_later(self, reason: str) -> None:
        self.close()
        self.node.counters["connected"] = 0
        self.node.log.error("%s; retrying in %.1f s", reason, self.backoff.failed())
