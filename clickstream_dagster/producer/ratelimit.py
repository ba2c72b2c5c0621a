"""Steady pacing for the producer: a token bucket, and replay of the original event timing."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second with a small burst, so sending is steady rather than bursty.

    The burst is at most 1/20 s worth of tokens (never less than one), which keeps any 50 ms window within a
    few percent of the target rate while letting the caller hand over small groups without a sleep per token.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (use no bucket for unlimited)")
        self.rate = rate
        self.capacity = max(1.0, rate / 20)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._last = clock()

    def acquire(self, n: int = 1) -> None:
        """Block until `n` tokens are available, then take them."""
        while True:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            needed = min(n, self.capacity)
            # The epsilon absorbs float rounding: a deficit below a clock tick would otherwise spin forever.
            if self._tokens >= needed - 1e-9:
                self._tokens -= n
                return
            self._sleep(max((needed - self._tokens) / self.rate, 1e-6))


class TimelinePacer:
    """Replays events at their original spacing compressed by `speedup` (event time is epoch ms)."""

    def __init__(
        self,
        speedup: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self._clock = clock
        self._sleep = sleep
        self._origin_event_ms: int | None = None
        self._origin_wall = 0.0

    def wait_for(self, event_ms: int) -> None:
        if self._origin_event_ms is None:
            self._origin_event_ms = event_ms
            self._origin_wall = self._clock()
            return
        due = self._origin_wall + (event_ms - self._origin_event_ms) / 1000.0 / self.speedup
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)
