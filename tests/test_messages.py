from __future__ import annotations

import json
import random

import pytest

from clickstream_dagster.messages import (
    MAX_MESSAGE_BYTES,
    EventMessage,
    MessageError,
    decode_fields,
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
        (b"not json at all", "^not JSON: "),
        (b'{"v":1,"visitorid":"\xff\xfe"}', "^invalid UTF-8: byte 0xff at byte position 20 "),
        (b"[1, 2]", "^not a JSON object: array$"),
        (None, "^empty: "),
        (_doc(v=2), "^unsupported format version: 2$"),
        (_doc(v=True), "^unsupported format version: true$"),
        (_doc(v=1.0), "^unsupported format version: 1.0$"),
        (
            b'{"v":1,"timestamp":1433221332117,"visitorid":-1,"event":"view","itemid":1,"transactionid":null,'
            b'"visitorid":5}',
            "^ambiguous: duplicated key 'visitorid'$",
        ),
        (_doc(timestamp=-5), "^timestamp out of range: -5$"),
        (_doc(event="addtocart", transactionid=5), "^unexpected field: transactionid on an addtocart event$"),
        (_doc(visitorid="<drop>"), "missing field: visitorid"),
        (_doc(itemid="12"), "wrong type: itemid"),
        (_doc(itemid=True), "wrong type: itemid"),
        (_doc(event="click"), "unknown event"),
        (_doc(event=5), "wrong type: event"),
        (_doc(visitorid=-3), "negative id: visitorid"),
        (_doc(timestamp=12), "timestamp out of range"),
        (_doc(transactionid=5), "^unexpected field: transactionid on a view event$"),
        (_doc(event="transaction"), "missing field: transactionid"),
        (b'{"v":1,"pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}', "oversized"),
    ],
)
def test_invalid_messages_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError, match=reason) as exc:
        decode_value(raw)
    kind, sep, detail = str(exc.value).partition(": ")
    assert sep and kind == exc.value.kind and detail, "every reason is `kind: detail`"
    with pytest.raises(MessageError, match=reason):
        decode_fields(raw)


def test_ids_beyond_bigint_are_quarantined_not_loaded() -> None:
    with pytest.raises(MessageError, match="id out of range: visitorid"):
        decode_value(_doc(visitorid=2**63))
    with pytest.raises(MessageError, match="id out of range: itemid"):
        decode_fields(encode_value(1433221332117, 1, "view", 2**63 + 5, None))
    assert decode_fields(encode_value(1433221332117, 2**63 - 1, "view", 0, None))[1] == 2**63 - 1


def _variants(rng: random.Random) -> bytes | None:
    """Messages near the canonical form: valid ones spelled differently, and every kind of invalid one."""
    event = rng.choice(["view", "addtocart", "transaction", "click", ""])
    tx: object = rng.choice([None, 0, 7, -1, "3", 2**64])
    doc: dict[str, object] = {
        "v": rng.choice([1, 1, 1, 2, "1", True]),
        "timestamp": rng.choice([1433221332117, 12, 4102444800000, 4102444799999, -5, 1.5]),
        "visitorid": rng.choice([0, 1, 257597, -1, 2**63 - 1, 2**63, None, "x"]),
        "event": event,
        "itemid": rng.choice([0, 355908, -2, 2**63, True]),
        "transactionid": tx,
    }
    if rng.random() < 0.1:
        del doc[rng.choice(list(doc))]
    raw = json.dumps(doc, separators=rng.choice([(",", ":"), (", ", ": ")])).encode()
    return rng.choice([raw, raw, raw, raw.replace(b":0,", b":00,"), raw + b" ", b"[" + raw + b"]", None])


def test_fast_path_agrees_with_decode_value() -> None:
    rng = random.Random(17)
    for _ in range(20_000):
        raw = _variants(rng)
        try:
            m = decode_value(raw)
        except MessageError as exc:
            with pytest.raises(MessageError) as fast_exc:
                decode_fields(raw)
            assert str(fast_exc.value) == str(exc), raw
        else:
            assert decode_fields(raw) == (m.timestamp, m.visitorid, m.event, m.itemid, m.transactionid), raw
