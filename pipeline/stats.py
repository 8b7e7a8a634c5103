"""Small rolling statistics for heartbeats: counts are cheap, percentiles over a window."""

from __future__ import annotations

from collections import deque

import numpy as np


class Rolling:
    """The last ``window`` samples of a quantity (e.g. milliseconds), for p50/p99."""

    def __init__(self, window: int = 1000) -> None:
        self.samples: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        a = np.fromiter(self.samples, dtype=np.float64)
        return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                "n": len(a)}
