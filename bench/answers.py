"""bench/answers: how the API holds a model's lists in memory, the alternatives side by side, at full scale.

The full-scale daily job leaves 364,748 known visitors with 20 recommendations each (7.3M rows) and 20
similar items for each of 123,520 items. Each design below holds rows of that shape (random ids and scores;
only the shape matters) and answers a visitor's list as [(itemid, score), ...], as `Lists.get` does:

- `arrays`: what the API uses (api/answers.py): sorted ids, row starts, items and scores as numpy arrays;
  a lookup is a binary search and two slices;
- `dict of tuples`: a dict from visitor to a tuple of (itemid, score) tuples, the obvious Python design;
- `dict of arrays`: a dict from visitor to numpy slices of shared arrays.

Reported for each: memory (resident set growth while building it), build time from the arrays that the
binary COPY gives, and lookup time per visitor (median and p99 of 200,000 random lookups, one at a time, as
requests do).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from multiprocessing import get_context

import numpy as np
import psutil

from clickstream_dagster.api.answers import Lists

VISITORS = 364_748
DEPTH = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--visitors", type=int, default=VISITORS)
    parser.add_argument("--depth", type=int, default=DEPTH)
    parser.add_argument("--lookups", type=int, default=200_000)


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


DESIGNS = ("arrays", "dict of tuples", "dict of arrays")


def run(args: argparse.Namespace) -> int:
    print(f"{args.visitors:,} visitors x {args.depth} rows = {args.visitors * args.depth:,} rows", flush=True)
    print("| design | memory (MB) | build (s) | lookup p50 (us) | lookup p99 (us) |")
    print("|---|---:|---:|---:|---:|")
    context = get_context(
        "fork"
    )  # each design in a fresh process: memory freed by one never flatters the next
    for name in DESIGNS:
        with context.Pool(1) as pool:
            grown, built, p50, p99 = pool.apply(_measure, (name, args.visitors, args.depth, args.lookups))
        print(f"| {name} | {grown:,.0f} | {built:.2f} | {p50:.1f} | {p99:.1f} |", flush=True)
    return 0


def _measure(name: str, visitors: int, depth: int, lookups: int) -> tuple[float, float, float, float]:
    rng = np.random.default_rng(0)
    n = visitors * depth
    keys = np.repeat(np.sort(rng.choice(10 * visitors, visitors, replace=False)), depth)
    items = rng.integers(0, 500_000, n, dtype=np.int64)
    scores = rng.random(n, dtype=np.float32)
    probes = rng.choice(keys[::depth], lookups).tolist()
    gc.collect()
    before = _rss_mb()
    t = time.perf_counter()
    get = _build(name, keys, items, scores, depth)
    built = time.perf_counter() - t
    grown = _rss_mb() - before
    assert len(get(probes[0])) == depth
    times = np.empty(len(probes))
    clock = time.perf_counter_ns
    for i, visitor in enumerate(probes):
        t0 = clock()
        get(visitor)
        times[i] = clock() - t0
    return grown, built, float(np.percentile(times, 50) / 1000), float(np.percentile(times, 99) / 1000)


def _build(
    name: str, keys: np.ndarray, items: np.ndarray, scores: np.ndarray, depth: int
) -> Callable[[int], list[tuple[int, float]]]:
    if name == "arrays":
        return Lists.from_rows(keys, items, scores).get
    starts = keys[::depth].tolist()
    if name == "dict of tuples":
        flat_items, flat_scores = items.tolist(), scores.tolist()
        table = {
            key: tuple(
                zip(
                    flat_items[i * depth : (i + 1) * depth],
                    flat_scores[i * depth : (i + 1) * depth],
                    strict=True,
                )
            )
            for i, key in enumerate(starts)
        }
        return lambda visitor: list(table.get(visitor, ()))
    slices = {
        key: (items[i * depth : (i + 1) * depth], scores[i * depth : (i + 1) * depth])
        for i, key in enumerate(starts)
    }

    def get(visitor: int) -> list[tuple[int, float]]:
        found = slices.get(visitor)
        return [] if found is None else list(zip(found[0].tolist(), found[1].tolist(), strict=True))

    return get
