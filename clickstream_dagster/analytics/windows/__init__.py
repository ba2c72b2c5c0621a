"""5-minute tumbling windows on event time, per event type, with exact distinct counts, kept incrementally:
everything about them lives in this package.

- the size and the window arithmetic (here);
- the distinct sets of each (window, event) and the deltas a batch adds (`sets`);
- their SQL (`queries`) and the Spark sum that applies the deltas to windowed_stats (`stats`).

The loading transaction (`ingestion.loader`, through `analytics.distinct`) queues, per batch of newly inserted events and per (window,
event) the batch touches, how much the batch adds to windowed_stats, in `window_deltas`: its number of
events, and the number of visitors and items the (window, event) did not have before it (its distinct sets,
`sets`, under the ingest lock). A pair is new in exactly one batch,
so for any set of whole batches, per (window, event):

    event_count grows by sum(events), unique_users by sum(new_users), unique_items by sum(new_items)

exactly. A run takes the committed batches (`pending_batches`), has Spark read their deltas from PostgreSQL
and aggregate them per window (`compute_window_deltas`), and `apply_window_deltas` adds the sums to
windowed_stats and removes those batches in one transaction. No run re-reads raw events, however many windows
a batch touches (a replay in file order touches nearly all of them every run).

Times are epoch milliseconds (UTC) throughout; windows are aligned to the epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

WINDOW_MS = 300_000
WINDOW_SECONDS = WINDOW_MS // 1000
WINDOW_INTERVAL = f"{WINDOW_SECONDS} seconds"  # PostgreSQL and Spark SQL interval text
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start_ms(event_time_ms: int) -> int:
    return (event_time_ms // WINDOW_MS) * WINDOW_MS


def windows_touched(event_times_ms: Iterable[int]) -> list[int]:
    """The sorted, distinct starts (epoch ms) of the windows that contain these event times."""
    return sorted({window_start_ms(int(t)) for t in event_times_ms})


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)
