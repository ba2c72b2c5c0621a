"""Planning offset ranges for ingestion runs (pure functions, used by the Kafka sensor): the sensor's cursor,
and the backlog cut into runs of bounded size, shared fairly between partitions."""

from __future__ import annotations

import json
from collections.abc import Mapping

from clickstream_dagster.ingestion.ranges import OffsetRange


def parse_cursor(cursor: str | None) -> dict[int, int]:
    """The sensor cursor is a JSON map {partition: next_offset}; keys are strings in JSON."""
    if not cursor:
        return {}
    return {int(p): int(o) for p, o in json.loads(cursor).items()}


def dump_cursor(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): offsets[p] for p in sorted(offsets)}, separators=(",", ":"))


def plan_runs(
    cursor: Mapping[int, int],
    end_offsets: Mapping[int, int],
    max_events_per_run: int,
    max_runs: int,
) -> tuple[list[list[OffsetRange]], dict[int, int]]:
    """Split the backlog into at most `max_runs` runs of at most `max_events_per_run` events each.

    Every run but possibly the last is full-size; within a run the budget is shared fairly between partitions
    that have a backlog. Returns the runs and the advanced cursor (partitions new to the cursor start at 0).
    """
    if max_events_per_run < 1 or max_runs < 1:
        raise ValueError("max_events_per_run and max_runs must be positive")
    position = {p: cursor.get(p, 0) for p in end_offsets}
    runs: list[list[OffsetRange]] = []
    while len(runs) < max_runs:
        backlog = {
            p: end_offsets[p] - position[p] for p in sorted(end_offsets) if end_offsets[p] > position[p]
        }
        if not backlog:
            break
        take = fair_shares(backlog, max_events_per_run)
        run = [OffsetRange(p, position[p], position[p] + n) for p, n in take.items() if n > 0]
        for r in run:
            position[r.partition] = r.end
        runs.append(run)
    return runs, {**dict(cursor), **position}


def fair_shares(backlog: Mapping[int, int], budget: int) -> dict[int, int]:
    """Water-filling: each partition gets an equal share, capped by its backlog; leftovers go to the rest."""
    take = dict.fromkeys(backlog, 0)
    open_parts = sorted(backlog, key=lambda p: (backlog[p], p))
    remaining = budget
    while open_parts and remaining > 0:
        share, extra = divmod(remaining, len(open_parts))
        p = open_parts[0]
        if backlog[p] <= share:
            take[p] = backlog[p]
            remaining -= backlog[p]
            open_parts.pop(0)
            continue
        for i, q in enumerate(open_parts):
            take[q] = share + (1 if i < extra else 0)
        remaining = 0
    return take
