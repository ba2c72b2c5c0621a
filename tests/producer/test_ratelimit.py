from __future__ import annotations

from clickstream_dagster.producer.ratelimit import TimelinePacer, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_is_steady() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(5000):
        bucket.acquire()
        stamps.append(clock.now)
    assert abs(stamps[-1] - 5.0) < 0.06
    # Never more than the burst (1/20 s of tokens) in any 50 ms.
    per_window: dict[int, int] = {}
    for t in stamps:
        per_window[int(t / 0.05)] = per_window.get(int(t / 0.05), 0) + 1
    assert max(per_window.values()) <= 51


def test_pacer_compresses_original_spacing() -> None:
    clock = FakeClock()
    pacer = TimelinePacer(speedup=60, clock=clock, sleep=clock.sleep)
    pacer.wait_for(1_000_000)
    pacer.wait_for(1_000_000 + 60_000)  # one minute of event time
    assert abs(clock.now - 1.0) < 1e-9
    pacer.wait_for(1_000_000 + 30_000)  # out of order: no waiting backwards
    assert abs(clock.now - 1.0) < 1e-9
