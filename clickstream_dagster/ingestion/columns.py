"""A batch's events (numpy columns) as binary COPY data for clickstream_events.

The loading transaction turns a batch's parsed events into columns once (`events.EventColumns`): they are put
in source-key order, filtered of offsets already stored, written to PostgreSQL as one binary COPY
(`copy_data`), and added to the distinct sets (`analytics.distinct`). The COPY data is built for all rows at
once with numpy instead of row by row.

Binary COPY format: see `sql.copy`. bigint is 8 bytes, integer 4, timestamptz the microseconds since 2000-01-01
UTC as 8 bytes, text its UTF-8 bytes.
"""

from __future__ import annotations

import numpy as np

from clickstream_dagster.events import EventColumns
from clickstream_dagster.sql.copy import COPY_HEADER, COPY_TRAILER

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 UTC, where timestamptz counts from

# The fields of each row, in the order of queries.COPY_EVENTS: fixed-size first, then the nullable and
# variable ones, so that a row's bytes are its fixed prefix and then its tail.
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("timestamp_len", ">i4"),
        ("timestamp", ">i8"),
        ("event_time_len", ">i4"),
        ("event_time", ">i8"),
        ("visitorid_len", ">i4"),
        ("visitorid", ">i8"),
        ("itemid_len", ">i4"),
        ("itemid", ">i8"),
        ("partition_len", ">i4"),
        ("partition", ">i4"),
        ("offset_len", ">i4"),
        ("offset", ">i8"),
        ("produced_at_len", ">i4"),
        ("produced_at", ">i8"),
        ("transactionid_len", ">i4"),
        ("transactionid", ">i8"),
        ("event_len", ">i4"),
    ]
)
_FIELDS = 10  # the _len entries above, plus kafka_topic


def _offset_of(name: str) -> int:
    fields = _ROW.fields
    assert fields is not None
    return int(fields[name][1])


def copy_data(events: EventColumns, topic: str) -> bytes:
    """The rows as binary COPY data for queries.COPY_EVENTS (the whole stream, header to trailer).

    event_time and produced_at are the same instants as to_timestamp(ms / 1000.0), which the
    `timestamps_in_range` check compares them with.
    """
    n = len(events)
    rows = np.zeros(n, _ROW)
    rows["fields"] = _FIELDS
    for name, values in (
        ("timestamp", events.timestamp),
        ("event_time", (events.timestamp - PG_EPOCH_MS) * 1000),
        ("visitorid", events.visitor),
        ("itemid", events.item),
        ("offset", events.offset),
        ("produced_at", (events.produced_ms - PG_EPOCH_MS) * 1000),
        ("transactionid", events.transaction),
    ):
        rows[f"{name}_len"] = 8
        rows[name] = values
    rows["partition_len"] = 4
    rows["partition"] = events.partition
    no_producer_time = events.produced_ms <= 0
    rows["produced_at_len"][no_producer_time] = -1
    rows["transactionid_len"][~events.has_transaction] = -1
    words = [name.encode() for name in events.names]
    rows["event_len"] = np.array([len(w) for w in words], np.int64)[events.event]

    # Each row is its fixed prefix less the 8 value bytes of a NULL, then the event type and the topic.
    # Rows differ only in those, so each kind of row (NULLs, event type) keeps its own columns of a table
    # wide enough for all: the kept bytes, row after row, are the COPY data.
    topic_field = len(topic.encode()).to_bytes(4, "big", signed=True) + topic.encode()
    width = _ROW.itemsize + max(map(len, words)) + len(topic_field)
    table = np.zeros((n, width), np.uint8)
    table[:, : _ROW.itemsize] = rows.view(np.uint8).reshape(n, _ROW.itemsize)
    kinds = (no_producer_time.astype(np.int64) * 2 + ~events.has_transaction) * len(words) + events.event
    keep = np.zeros((4 * len(words), width), np.bool_)
    for kind in range(len(keep)):
        nulls, word = divmod(kind, len(words))
        tail = words[word] + topic_field
        table[kinds == kind, _ROW.itemsize : _ROW.itemsize + len(tail)] = np.frombuffer(tail, np.uint8)
        keep[kind, : _ROW.itemsize + len(tail)] = True
        for null, name in ((nulls >= 2, "produced_at"), (nulls % 2 == 1, "transactionid")):
            if null:
                start = _offset_of(name)
                keep[kind, start : start + 8] = False
    return COPY_HEADER + table[keep[kinds]].tobytes() + COPY_TRAILER
