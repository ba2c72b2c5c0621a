"""Why offsets of a partition carry no message: the record batches of Kafka's log, read as the broker stores them.

A consumer never sees why an offset is missing: under read_committed it skips transaction markers and the
records of aborted transactions alike, and compaction leaves holes that look the same. This module fetches
the raw record batches of an offset range (a Fetch request under read_uncommitted, which returns every batch,
markers included) and sorts each offset into what it holds:

- a data record outside any transaction, or in a committed one: a message a read_committed consumer gets;
- a control record (a transaction's commit or abort marker);
- a data record of an aborted transaction;
- nothing: removed by compaction.

It is used only for ranges where the consumer received fewer messages than the range has offsets, so its
speed does not matter; what matters is that `delivered` agrees with what the consumer received, which the
caller asserts.

kafka-python's wire structs (`kafka.protocol.old`, `kafka.record`) are library internals: they come through
`clients.kafka_internals`, the one door to them, which checks the library's version.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from clickstream_dagster.clients.kafka_internals import FetchRequest_v4, FetchResponse_v4, MemoryRecords

READ_UNCOMMITTED = 0
FETCH_MAX_BYTES = 8 * 1024 * 1024
_CONTROL_COMMIT = 1
_CONTROL_ABORT = 0
_ERROR_NONE = 0
_ERROR_OFFSET_OUT_OF_RANGE = 1


class KafkaLogError(RuntimeError):
    pass


@dataclass
class OffsetKinds:
    """What the offsets [start, end) of one partition hold: delivered + control + aborted + compacted
    + undecided = end - start."""

    delivered: int = 0
    control: int = 0
    aborted: int = 0
    compacted: int = 0
    # Offsets of data records whose transaction had not ended by the partition's high watermark (the range
    # reaches past the last stable offset); the caller plans ranges that never do, so this stays 0.
    undecided: int = 0


@dataclass
class _Walk:
    start: int
    end: int
    kinds: OffsetKinds = field(default_factory=OffsetKinds)
    # per producer id: its transactional data offsets in the range still waiting for their marker
    pending: dict[int, int] = field(default_factory=dict)
    seen: int = 0  # offsets in [start, end) that held a record of any kind

    def in_range(self, offset: int) -> bool:
        return self.start <= offset < self.end


def classify_offsets(
    host: str, port: int, topic: str, partition: int, start: int, end: int, timeout_s: float = 30.0
) -> OffsetKinds:
    """Sort every offset in [start, end) of `topic`/`partition` by what it holds; (host, port) is the
    partition's leader. Reads past `end` only as far as needed to find the markers of transactions that
    began inside the range."""
    walk = _Walk(start, end)
    offset = start
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        correlation = 0
        while offset < end or walk.pending:
            correlation += 1
            err, high, records = _fetch(sock, correlation, topic, partition, offset)
            if err == _ERROR_OFFSET_OUT_OF_RANGE and offset == start and offset < end:
                raise KafkaLogError(
                    f"{topic}/{partition}: offset {offset} is no longer in the log (retention or deleted records)"
                )
            if err != _ERROR_NONE:
                raise KafkaLogError(
                    f"{topic}/{partition}: fetch at offset {offset} failed with error code {err}"
                )
            next_offset = _walk_batches(walk, records, offset)
            if next_offset is None:  # nothing more in the log
                if offset >= high:
                    break
                raise KafkaLogError(
                    f"{topic}/{partition}: no record batch at {offset} below high watermark {high}"
                )
            offset = next_offset
    kinds = walk.kinds
    kinds.undecided = sum(walk.pending.values())
    kinds.compacted = (end - start) - walk.seen
    return kinds


def _walk_batches(walk: _Walk, records: bytes, fetch_offset: int) -> int | None:
    """Account for the batches of one fetch response; returns the next offset to fetch, None if empty."""
    batches = MemoryRecords(records)
    next_offset: int | None = None
    batch = batches.next_batch()
    while batch is not None:
        if batch.magic != 2:
            raise KafkaLogError(f"record batch of message format {batch.magic} (only format 2 is supported)")
        if batch.last_offset >= fetch_offset:
            _account(walk, batch)
            next_offset = batch.last_offset + 1
        batch = batches.next_batch()
    return next_offset


def _account(walk: _Walk, batch: object) -> None:
    pid: int = batch.producer_id  # type: ignore[attr-defined]
    if batch.is_control_batch:  # type: ignore[attr-defined]
        for record in batch:  # type: ignore[attr-defined]
            kind = struct.unpack(">hh", record.key)[1]
            if walk.in_range(record.offset):
                walk.seen += 1
                walk.kinds.control += 1
            pending = walk.pending.pop(pid, None)
            if pending is not None:
                if kind == _CONTROL_ABORT:
                    walk.kinds.aborted += pending
                elif kind == _CONTROL_COMMIT:
                    walk.kinds.delivered += pending
                else:
                    raise KafkaLogError(f"unknown control record type {kind} at offset {record.offset}")
        return
    in_range = 0
    for record in batch:  # type: ignore[attr-defined]
        if walk.in_range(record.offset):
            in_range += 1
    walk.seen += in_range
    if not in_range:
        return
    if batch.is_transactional:  # type: ignore[attr-defined]
        walk.pending[pid] = walk.pending.get(pid, 0) + in_range
    else:
        walk.kinds.delivered += in_range


def _fetch(
    sock: socket.socket, correlation: int, topic: str, partition: int, offset: int
) -> tuple[int, int, bytes]:
    request = FetchRequest_v4(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=FETCH_MAX_BYTES,
        isolation_level=READ_UNCOMMITTED,
        topics=[(topic, [(partition, offset, FETCH_MAX_BYTES)])],
    )
    request.with_header(correlation_id=correlation, client_id="clickstream-offset-kinds")
    sock.sendall(request.encode(header=True, framed=True))
    (size,) = struct.unpack(">i", _recv(sock, 4))
    response = FetchResponse_v4.decode(_recv(sock, size), header=True)
    if response.header.correlation_id != correlation:
        raise KafkaLogError("fetch response out of order")
    for _topic, partitions in response.responses:
        for partition_index, error_code, high_watermark, _lso, _aborted, records in partitions:
            if partition_index == partition:
                return int(error_code), int(high_watermark), records or b""
    raise KafkaLogError(f"fetch response without {topic}/{partition}")


def _recv(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise KafkaLogError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)
