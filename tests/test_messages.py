from __future__ import annotations

import json

import pytest

from clickstream_dagster.messages import (
    MAX_MESSAGE_BYTES,
    EventMessage,
    MessageError,
    decode_value,
    encode_key,
    encode_value,
)


def test_encoded_value_is_the_documented_json() -> None:
    raw = encode_value(1433221332117, 257597, "view", 355908, None)
    assert json.loads(raw) == {
        "v": 1,
        "timestamp": 1433221332117,
        "visitorid": 257597,
        "event": "view",
        "itemid": 355908,
        "transactionid": None,
    }
    assert encode_key(257597) == b"257597"


@pytest.mark.parametrize(
    "event",
    [
        EventMessage(1433221332117, 1, "view", 2, None),
        EventMessage(1433221332117, 1, "addtocart", 2, None),
        EventMessage(1433221332117, 0, "transaction", 0, 14418),
    ],
)
def test_round_trip(event: EventMessage) -> None:
    raw = encode_value(event.timestamp, event.visitorid, event.event, event.itemid, event.transactionid)
    assert decode_value(raw) == event


def _doc(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "timestamp": 1433221332117,
        "visitorid": 1,
        "event": "view",
        "itemid": 2,
        "transactionid": None,
    }
    doc.update(overrides)
    return json.dumps({k: v for k, v in doc.items() if v != "<drop>"}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty message"),
        (_doc(v=2), "unsupported format version"),
        (_doc(visitorid="<drop>"), "missing field: visitorid"),
        (_doc(itemid="12"), "wrong type: itemid"),
        (_doc(itemid=True), "wrong type: itemid"),
        (_doc(event="click"), "unknown event"),
        (_doc(event=5), "wrong type: event"),
        (_doc(visitorid=-3), "negative id: visitorid"),
        (_doc(timestamp=12), "timestamp out of range"),
        (_doc(transactionid=5), "transactionid on a view event"),
        (_doc(event="transaction"), "missing field: transactionid"),
        (b'{"v":1,"pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}', "oversized"),
    ],
)
def test_invalid_messages_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_value(raw)
