"""The event schema, and events as they cross module boundaries.

The schema's one home: the event types and the sane event-time range, which the CSV readers, the message
decoder, the raw_events checks, the ML cleaning and the dashboard all use. Then one parsed message
(`ParsedEvent`) and a batch as numpy columns (`EventColumns`), which the loading transaction writes and the
distinct sets count."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]

EVENT_TYPES: tuple[str, ...] = ("view", "addtocart", "transaction")
# Sane event-time range (epoch ms). It catches files written in seconds or microseconds.
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00Z
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01T00:00Z


class ParsedEvent(NamedTuple):
    """A valid message of the event topic, with its source coordinates."""

    timestamp: int  # epoch ms
    visitorid: int
    event: str
    itemid: int
    transactionid: int | None
    produced_ms: int  # the Kafka record's timestamp; <= 0 when it has none
    partition: int
    offset: int


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
    def of(cls, events: Sequence[ParsedEvent]) -> EventColumns:
        """Columns of parsed events, sorted by (partition, offset)."""
        n = len(events)
        column = dict(zip(ParsedEvent._fields, zip(*events, strict=True), strict=True)) if n else {}
        names = sorted(map(str, set(column.get("event", ()))))
        code = {name: k for k, name in enumerate(names)}

        def ints(name: str) -> Ints:
            return np.fromiter(column.get(name, ()), np.int64, n)

        transactions = column.get("transactionid", ())
        columns = cls(
            timestamp=ints("timestamp"),
            visitor=ints("visitorid"),
            event=np.fromiter(map(code.__getitem__, column.get("event", ())), np.int64, n),
            item=ints("itemid"),
            transaction=np.fromiter((t or 0 for t in transactions), np.int64, n),
            has_transaction=np.fromiter((t is not None for t in transactions), np.bool_, n),
            produced_ms=ints("produced_ms"),
            partition=ints("partition"),
            offset=ints("offset"),
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
