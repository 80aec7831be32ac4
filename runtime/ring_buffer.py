"""A fixed-capacity ring buffer of float32 samples between an audio callback and the recognizer.

One writer (the audio callback thread) and one reader. The writer never allocates, never takes a
lock and never raises: it copies into preallocated storage and moves its own index. Each index is
written by one side only (under the GIL an int assignment is atomic), so no lock is needed. When the
reader falls behind, the newest samples that do not fit are dropped and counted, never silently.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    def __init__(self, capacity_samples: int):
        if capacity_samples <= 0:
            raise ValueError("ring buffer capacity must be positive")
        self.capacity = capacity_samples
        self._data = np.zeros(capacity_samples, dtype=np.float32)
        self._written = 0  # total samples ever written (writer's index)
        self._read = 0  # total samples ever read (reader's index)
        self.dropped = 0  # samples lost to overflow (writer side)

    @property
    def available(self) -> int:
        return self._written - self._read

    def write(self, samples: np.ndarray) -> int:
        """Copy as many samples as fit; returns how many. Safe to call from an audio callback."""
        free = self.capacity - (self._written - self._read)
        n = min(len(samples), free)
        if n < len(samples):
            self.dropped += len(samples) - n
        if n <= 0:
            return 0
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start : start + first] = samples[:first]
        if n > first:
            self._data[: n - first] = samples[first:n]
        self._written += n  # publish after the copy
        return n

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Take up to `max_samples` (all available by default) as a new array."""
        n = self.available if max_samples is None else min(max_samples, self.available)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: n - first]
        self._read += n
        return out
