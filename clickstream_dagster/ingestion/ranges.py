"""The offset range: the one unit of ingestion work, and every form it takes.

`OffsetRange(partition, start, end)` is a half-open span of one partition's offsets. An upper bound on its
messages, never their count: transaction markers, aborted transactions, compaction and retention all leave
offsets that carry no message (`reader.RangeRead` accounts for each).

Its forms, all defined here:
- the dict `{"partition", "start", "end"}` (`as_dict` / `from_dict`): the run config (raw_events'
  `OffsetRangeConfig` is built from it), asset metadata and the bound parameters of the ledger's SQL;
- the tag text `p:start-end,...` (`to_tag` / `from_tag`): the `clickstream/ranges` tag of an ingest run, which
  tells the sensor and the contiguity check what is in flight, and the tail of the run key (`run_key`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class OffsetRange:
    partition: int
    start: int  # inclusive
    end: int  # exclusive

    @property
    def size(self) -> int:
        """Offsets in the range: an upper bound on its messages."""
        return self.end - self.start

    def as_dict(self) -> dict[str, int]:
        """{"partition", "start", "end"}: how a range appears in run config, metadata and query parameters."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> OffsetRange:
        return cls(int(d["partition"]), int(d["start"]), int(d["end"]))


def to_tag(ranges: Iterable[OffsetRange]) -> str:
    """`p:start-end,...` in partition order: the runs' ranges tag and the run key's tail."""
    return ",".join(f"{r.partition}:{r.start}-{r.end}" for r in sorted(ranges, key=lambda r: r.partition))


def from_tag(text: str) -> list[OffsetRange]:
    """The inverse of `to_tag`."""
    out = []
    for part in filter(None, text.split(",")):
        partition, span = part.split(":", 1)
        start, end = span.split("-", 1)
        out.append(OffsetRange(int(partition), int(start), int(end)))
    return out


def run_key(topic: str, ranges: Iterable[OffsetRange]) -> str:
    """Deterministic: the same ranges always give the same key, so Dagster never launches them twice."""
    return f"{topic}/{to_tag(ranges)}"


def subtract(spans: Iterable[OffsetRange], covering: Iterable[OffsetRange]) -> list[OffsetRange]:
    """The parts of `spans` that no range of `covering` (of the same partition) covers (never empty ones)."""
    covering = list(covering)
    out: list[OffsetRange] = []
    for span in spans:
        pieces = [(span.start, span.end)] if span.size > 0 else []
        for c in covering:
            if c.partition != span.partition:
                continue
            pieces = [
                piece
                for s, e in pieces
                for piece in ((s, min(e, c.start)), (max(s, c.end), e))
                if piece[1] > piece[0]
            ]
        out.extend(OffsetRange(span.partition, s, e) for s, e in pieces)
    return out
