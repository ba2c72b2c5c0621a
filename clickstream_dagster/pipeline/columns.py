"""A batch's events as numpy columns, and their binary COPY into clickstream_events.

`load_batch` turns a batch's parsed events into columns once: they are put in source-key order, filtered of
offsets already stored, written to PostgreSQL as one binary COPY, and added to the distinct sets
(`pipeline.distinct`). The COPY data is built for all rows at once with numpy instead of row by row.

Binary COPY format (PostgreSQL docs, "COPY", "Binary Format"): a header, then per row a 16-bit field count and
per field a 32-bit length (-1 for NULL) and the value's bytes, all big-endian; a 16-bit -1 ends the data.
bigint is 8 bytes, integer 4, timestamptz the microseconds since 2000-01-01 UTC as 8 bytes, text its UTF-8
bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from operator import itemgetter

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 UTC, where timestamptz counts from
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"

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


@dataclass
class EventColumns:
    """Events as columns, one array each; `event` holds codes into `names` (sorted)."""

    timestamp: Ints  # epoch ms
    visitor: Ints
    event: Ints
    item: Ints
    transaction: Ints  # 0 where there is none
    has_transaction: npt.NDArray[np.bool_]
    produced_ms: Ints  # the Kafka record's timestamp; <= 0 when it has none
    partition: Ints
    offset: Ints
    names: list[str]

    @classmethod
    def of(cls, events: Sequence[Sequence[object]]) -> EventColumns:
        """Columns of parsed events, (timestamp, visitorid, event, itemid, transactionid, produced_ms,
        partition, offset) each as `Batch.events` holds them, sorted by (partition, offset)."""
        n = len(events)
        names = sorted(map(str, set(map(itemgetter(2), events))))
        code = {name: k for k, name in enumerate(names)}

        def ints(k: int) -> Ints:
            return np.fromiter(map(itemgetter(k), events), np.int64, n)

        transactions = [e[4] for e in events]
        columns = cls(
            timestamp=ints(0),
            visitor=ints(1),
            event=np.fromiter(map(code.__getitem__, map(itemgetter(2), events)), np.int64, n),
            item=ints(3),
            transaction=np.fromiter((t or 0 for t in transactions), np.int64, n),
            has_transaction=np.fromiter((t is not None for t in transactions), np.bool_, n),
            produced_ms=ints(5),
            partition=ints(6),
            offset=ints(7),
            names=names,
        )
        return columns.take(np.lexsort((columns.offset, columns.partition)))

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, rows: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> EventColumns:
        """These rows only (indexes or a mask), in that order."""
        return EventColumns(
            **{f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "names"},
            names=self.names,
        )

    def without(self, stored: Collection[tuple[int, int]]) -> EventColumns:
        """The events whose (partition, offset) is not among `stored`."""
        if not stored:
            return self
        keep = np.ones(len(self), np.bool_)
        by_partition: dict[int, list[int]] = {}
        for partition, offset in stored:
            by_partition.setdefault(partition, []).append(offset)
        for partition, offsets in by_partition.items():
            mine = self.partition == partition
            keep[mine] = ~np.isin(self.offset[mine], np.asarray(offsets, np.int64))
        return self.take(keep)

    def per_partition(self) -> Counter[int]:
        partitions, counts = np.unique(self.partition, return_counts=True)
        return Counter(dict(zip(partitions.tolist(), counts.tolist(), strict=True)))

    def copy_data(self, topic: str) -> bytes:
        """The rows as binary COPY data for queries.COPY_EVENTS (the whole stream, header to trailer).

        event_time and produced_at are the same instants as to_timestamp(ms / 1000.0), which the
        `timestamps_in_range` check compares them with.
        """
        n = len(self)
        rows = np.zeros(n, _ROW)
        rows["fields"] = _FIELDS
        for name, values in (
            ("timestamp", self.timestamp),
            ("event_time", (self.timestamp - PG_EPOCH_MS) * 1000),
            ("visitorid", self.visitor),
            ("itemid", self.item),
            ("offset", self.offset),
            ("produced_at", (self.produced_ms - PG_EPOCH_MS) * 1000),
            ("transactionid", self.transaction),
        ):
            rows[f"{name}_len"] = 8
            rows[name] = values
        rows["partition_len"] = 4
        rows["partition"] = self.partition
        no_producer_time = self.produced_ms <= 0
        rows["produced_at_len"][no_producer_time] = -1
        rows["transactionid_len"][~self.has_transaction] = -1
        words = [name.encode() for name in self.names]
        rows["event_len"] = np.array([len(w) for w in words], np.int64)[self.event]

        # Each row is its fixed prefix less the 8 value bytes of a NULL, then the event type and the topic.
        # Rows differ only in those, so each kind of row (NULLs, event type) keeps its own columns of a table
        # wide enough for all: the kept bytes, row after row, are the COPY data.
        topic_field = len(topic.encode()).to_bytes(4, "big", signed=True) + topic.encode()
        width = _ROW.itemsize + max(map(len, words)) + len(topic_field)
        table = np.zeros((n, width), np.uint8)
        table[:, : _ROW.itemsize] = rows.view(np.uint8).reshape(n, _ROW.itemsize)
        kinds = (no_producer_time.astype(np.int64) * 2 + ~self.has_transaction) * len(words) + self.event
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
