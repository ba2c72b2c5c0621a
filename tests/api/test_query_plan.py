"""The answer's one query reads short index ranges only: the visitor's newest views and carts through
clickstream_events_visitor_event_time_idx (migration 0011), stopping at the session's bound however long the
visitor's history, and their purchases (the model's lists are in the API's memory). Checked on the
plans PostgreSQL really uses: custom plans (with EXPLAIN ANALYZE, so the rows read are counted too) and the
generic plan that a prepared statement switches to after its first executions."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import psycopg

from clickstream_dagster.api.session import SessionRules
from clickstream_dagster.sql import api as q
from tests.api.conftest import Served, TrainedModel
from tests.helpers import event_months

ROWS = 200_000  # round robin over the model's visitors
HEAVY = 6_000  # more events of one visitor (a crawler's history)
INDEX = "clickstream_events_visitor_event_time_idx"
RULES = SessionRules()


def _event(i: int) -> str:
    return "transaction" if i % 40 == 7 else "addtocart" if i % 10 == 3 else "view"


def _populate(conn: psycopg.Connection, visitors: list[int], items: list[int], heavy: int) -> None:
    """ROWS events of the visitors, round robin (of each one's, every 10th an add-to-cart and every 40th a
    purchase), and HEAVY views and add-to-carts of `heavy`, all ingested now."""
    rows = [(visitors[i % len(visitors)], _event(i)) for i in range(ROWS)]
    rows += [(heavy, "addtocart" if i % 5 == 0 else "view") for i in range(HEAVY)]
    event_months(conn, range(1_433_221_332_117, 1_433_221_332_117 + len(rows) * 10, 86_400_000 // 2))
    with conn.cursor() as cur:
        with cur.copy(
            'COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid, '
            "kafka_topic, kafka_partition, kafka_offset) FROM STDIN"
        ) as copy:
            for i, (visitor, event) in enumerate(rows):
                ts = 1_433_221_332_117 + i * 10
                copy.write_row(
                    (
                        ts,
                        datetime.fromtimestamp(ts / 1000, UTC),
                        visitor,
                        event,
                        items[i % len(items)],
                        i if event == "transaction" else None,
                        "t",
                        0,
                        i,
                    )
                )
        cur.execute("ANALYZE clickstream_events")
    conn.commit()


def _nodes(plan: Any) -> list[dict[str, Any]]:
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


def _generic(query: str) -> str:
    """The query with $n placeholders, numbered by first appearance (as psycopg sends it)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return re.sub(r"%\((\w+)\)s", number, query)


def _kind(node: dict[str, Any]) -> str:
    """Which of the visitor's event types a scan of clickstream_events reads."""
    condition = node.get("Index Cond", "") + node.get("Recheck Cond", "")
    return next(e for e in ("view", "addtocart", "transaction") if f"'{e}'" in condition)


def _is_month_copy(name: str | None, of: str) -> bool:
    """A month's copy of clickstream_events (`clickstream_events_2015_06`) or of one of its indexes (the copy
    of clickstream_events_visitor_event_time_idx is `clickstream_events_2015_06_visitorid_event_timestamp_idx`)."""
    if name is None:
        return False
    if of == "clickstream_events":
        return re.fullmatch(r"clickstream_events_\d{4}_\d{2}", name) is not None
    return (
        of == INDEX
        and re.fullmatch(r"clickstream_events_\d{4}_\d{2}_visitorid_event_timestamp_idx", name) is not None
    )


def _event_scans(nodes: list[dict[str, Any]], generic: bool) -> dict[str, dict[str, Any]]:
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}, [n["Node Type"] for n in nodes]
    used = {n["Index Name"] for n in nodes if str(n.get("Index Name", "")).startswith("clickstream_events")}
    assert used and all(_is_month_copy(name, INDEX) for name in used), used
    scans = {_kind(n): n for n in nodes if _is_month_copy(n.get("Relation Name"), "clickstream_events")}
    assert set(scans) == {"view", "addtocart", "transaction"}, scans
    for event in ("view", "addtocart"):
        node = scans[event]
        shape = (node["Node Type"], node.get("Scan Direction"))
        if generic:  # whatever the visitor: backwards in event time, stopping at the bound
            assert shape == ("Index Scan", "Backward"), (event, node)
        else:  # or, when the statistics promise no more rows than the bound, all of them through a bitmap
            assert shape in {("Index Scan", "Backward"), ("Bitmap Heap Scan", None)}, (event, node)
            if shape[0] == "Bitmap Heap Scan":
                assert node["Plan Rows"] <= RULES.events, (event, node)
    relations = {n.get("Relation Name") for n in nodes} - {None}
    assert all(_is_month_copy(r, "clickstream_events") for r in relations), (
        relations
    )  # nothing but the events
    return scans


def _read(scans: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {event: n["Actual Rows"] * n["Actual Loops"] for event, n in scans.items()}


def test_the_answer_reads_short_index_ranges(served: Served, model_a: TrainedModel) -> None:
    items = model_a.similar["itemid"].unique().tolist()
    visitors = model_a.recommendations["visitorid"].unique().tolist()
    visitor, heavy = visitors[0], visitors[1]
    with psycopg.connect(served.url) as conn:
        _populate(conn, visitors, items, heavy)
        own = [_event(i) for i in range(0, ROWS, len(visitors))]
        assert own.count("view") > RULES.events, "too few events per visitor to show the bound"

        def analyze(visitor: int) -> dict[str, float]:
            params = {**RULES.params(), "visitor": visitor}
            row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q.VISITOR_SESSION, params).fetchone()
            assert row is not None
            parts = {p for p, *_ in conn.execute(q.VISITOR_SESSION, params).fetchall()}
            bought = {0} if own.count("transaction") else set()
            assert parts == {1} | bought, parts  # the session (the events are live), purchases if any
            return _read(_event_scans(_nodes(row[0]), generic=False))

        # At most the bound of each kind, of the visitor's few hundred events ...
        assert analyze(visitor) == {
            "view": RULES.events,
            "addtocart": min(own.count("addtocart"), RULES.events),
            "transaction": own.count("transaction"),
        }
        # ... and of a crawler's thousands.
        assert analyze(heavy) == {
            "view": RULES.events,
            "addtocart": RULES.events,
            "transaction": own.count("transaction"),
        }

        row = conn.execute("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + _generic(q.VISITOR_SESSION)).fetchone()
        assert row is not None
        _event_scans(_nodes(row[0]), generic=True)
