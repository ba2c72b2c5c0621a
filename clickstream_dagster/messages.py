"""The event message on the Kafka topic, version 1.

Key: the visitorid as ASCII digits, so one visitor's events stay in one partition, in order.
Value: compact UTF-8 JSON, one object:

    {"v":1,"timestamp":1433221332117,"visitorid":257597,"event":"view","itemid":355908,"transactionid":null}

- ``v``: format version (1). A consumer quarantines versions it does not know.
- ``timestamp``: event time, Unix epoch milliseconds (as in events.csv).
- ``visitorid``, ``itemid``: non-negative integers.
- ``event``: ``view`` | ``addtocart`` | ``transaction``.
- ``transactionid``: a non-negative integer on ``transaction`` events, ``null`` otherwise.

Headers: ``src`` (fingerprint of the source file) and ``line`` (its line number), which let the producer
resume exactly after what a previous run got acknowledged, and let anyone trace a message to its CSV row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import orjson

from clickstream_dagster.events import EVENT_TYPES, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024
# Ids and timestamps are stored as PostgreSQL bigint; a larger one must be quarantined, not crash the load.
MAX_ID = 2**63 - 1
HEADER_SOURCE = "src"
HEADER_LINE = "line"


class MessageError(ValueError):
    """A message that is not a valid v1 event; the text is the quarantine reason, always `kind: detail`, so
    reasons group by their kind (`split_part(reason, ':', 1)`)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class EventMessage:
    timestamp: int
    visitorid: int
    event: str
    itemid: int
    transactionid: int | None


def encode_key(visitorid: int) -> bytes:
    return b"%d" % visitorid


_EVENT_BYTES = {name: name.encode() for name in EVENT_TYPES}


def encode_value(timestamp: int, visitorid: int, event: str, itemid: int, transactionid: int | None) -> bytes:
    # Hand-formatted (2-3x faster than json.dumps); every field is an int or one of three fixed words.
    tx = b"null" if transactionid is None else b"%d" % transactionid
    return b'{"v":1,"timestamp":%d,"visitorid":%d,"event":"%s","itemid":%d,"transactionid":%s}' % (
        timestamp,
        visitorid,
        _EVENT_BYTES.get(event) or event.encode(),
        itemid,
        tx,
    )


def _int_field(doc: dict[str, object], name: str) -> int:
    if name not in doc or doc[name] is None:
        raise MessageError("missing field", name)
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError("wrong type", f"{name} must be an integer, got {_json_type(value)}")
    return value


def _id_field(doc: dict[str, object], name: str) -> int:
    value = _int_field(doc, name)
    if value < 0:
        raise MessageError("negative id", f"{name}={value}")
    if value > MAX_ID:
        raise MessageError("id out of range", f"{name}={value}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise MessageError("ambiguous", f"duplicated key {key!r}")
        seen[key] = value
    return seen


def decode_value(raw: bytes | None) -> EventMessage:
    """Parse and validate one message value; raises MessageError with the quarantine reason."""
    if raw is None:
        raise MessageError("empty", "null value (a tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError("oversized", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(
            "invalid UTF-8", f"byte 0x{raw[exc.start]:02x} at byte position {exc.start} ({exc.reason})"
        ) from None
    try:
        doc = orjson.loads(raw)
    except ValueError as exc:
        raise MessageError("not JSON", str(exc)) from None
    if not isinstance(doc, dict):
        raise MessageError("not a JSON object", _json_type(doc))
    # orjson keeps the last of duplicated keys; such a message means two things at once. (Only messages off
    # the canonical form come here, so the second parse costs nothing on the producer's messages.)
    json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    version = doc.get("v")
    if type(version) is not int or version != FORMAT_VERSION:  # not true, not 1.0: the integer 1
        raise MessageError("unsupported format version", orjson.dumps(version).decode()[:40])
    event = doc.get("event")
    if event is None:
        raise MessageError("missing field", "event")
    if not isinstance(event, str):
        raise MessageError("wrong type", f"event must be a string, got {_json_type(event)}")
    if event not in EVENT_TYPES:
        raise MessageError("unknown event", repr(event[:40]))
    timestamp = _int_field(doc, "timestamp")
    if not MIN_TIMESTAMP_MS <= timestamp < MAX_TIMESTAMP_MS:
        raise MessageError("timestamp out of range", str(timestamp))
    visitorid = _id_field(doc, "visitorid")
    itemid = _id_field(doc, "itemid")
    transactionid: int | None
    if event == "transaction":
        transactionid = _id_field(doc, "transactionid")
    else:
        if doc.get("transactionid") is not None:
            raise MessageError("unexpected field", f"transactionid on {_article(event)} {event} event")
        transactionid = None
    return EventMessage(timestamp, visitorid, event, itemid, transactionid)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# The exact bytes `encode_value` writes: no whitespace, fields in order, integers without leading zeros (which
# JSON forbids). A value of this shape decodes to the same fields as `decode_value`, only faster; anything
# else goes through `decode_value`.
_CANONICAL = re.compile(
    rb'\{"v":1,"timestamp":(0|[1-9][0-9]{0,18}),"visitorid":(0|[1-9][0-9]{0,18}),'
    rb'"event":"(view|addtocart|transaction)","itemid":(0|[1-9][0-9]{0,18}),'
    rb'"transactionid":(null|0|[1-9][0-9]{0,18})\}\Z'
)
_EVENT_NAMES = {name.encode(): name for name in EVENT_TYPES}


def decode_fields(raw: bytes | None) -> tuple[int, int, str, int, int | None]:
    """`decode_value` as a plain tuple (timestamp, visitorid, event, itemid, transactionid), with a fast path
    for messages in the canonical form the producer writes. Raises MessageError with the same reasons."""
    match = _CANONICAL.match(raw) if raw is not None and len(raw) <= MAX_MESSAGE_BYTES else None
    if match is not None:
        ts_raw, visitor_raw, event_raw, item_raw, tx_raw = match.groups()
        event = _EVENT_NAMES[event_raw]
        timestamp, visitorid, itemid = int(ts_raw), int(visitor_raw), int(item_raw)
        transactionid = None if tx_raw == b"null" else int(tx_raw)
        if (
            (transactionid is None) != (event == "transaction")
            and MIN_TIMESTAMP_MS <= timestamp < MAX_TIMESTAMP_MS
            and visitorid <= MAX_ID
            and itemid <= MAX_ID
            and (transactionid is None or transactionid <= MAX_ID)
        ):
            return timestamp, visitorid, event, itemid, transactionid
    m = decode_value(raw)  # the reason, or an unusual but valid spelling
    return m.timestamp, m.visitorid, m.event, m.itemid, m.transactionid
