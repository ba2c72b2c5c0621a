"""An independent recomputation of the sessions tables with pandas, from all events at once (no queue, no
spans, no differences): what the incremental sessions step must match row for row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
STEP = {"view": 0, "addtocart": 1, "transaction": 2}

SESSION_COLUMNS = [
    "visitorid", "start_ms", "end_ms", "duration_ms", "events", "views", "addtocarts", "transactions",
    "distinct_items", "entry_itemid", "exit_itemid", "bounced", "converted", "cart_abandoned",
]  # fmt: skip


def _or_flags(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per group of `keys`: the bit_or of its rows' funnel flags (1 view, 2 add-to-cart, 4 transaction)."""
    bits = frame.groupby(keys)[["view", "addtocart", "transaction"]].max()
    return (bits["view"] + 2 * bits["addtocart"] + 4 * bits["transaction"]).rename("flags")


def recompute(events: pd.DataFrame, categories: dict[int, int], gap_ms: int) -> dict[str, pd.DataFrame]:
    """events: timestamp, visitorid, event, itemid; categories: itemid -> categoryid (others: unknown, -1)."""
    e = events[["timestamp", "visitorid", "event", "itemid"]].copy()
    e["step"] = e["event"].map(STEP).astype(np.int64)
    e = e.sort_values(["visitorid", "timestamp", "step", "itemid"], kind="stable").reset_index(drop=True)
    first_of_visitor = e["visitorid"].ne(e["visitorid"].shift())
    opens = first_of_visitor | (e["timestamp"] - e["timestamp"].shift() > gap_ms)
    e["sid"] = opens.cumsum()
    e["start_ms"] = e.groupby("sid")["timestamp"].transform("min")
    for name, step in STEP.items():
        e[name] = (e["step"] == step).astype(np.int64)
    g = e.groupby("sid")
    sessions = pd.DataFrame(
        {
            "visitorid": g["visitorid"].first(),
            "start_ms": g["start_ms"].first(),
            "end_ms": g["timestamp"].max(),
            "events": g.size(),
            "views": g["view"].sum(),
            "addtocarts": g["addtocart"].sum(),
            "transactions": g["transaction"].sum(),
            "distinct_items": g["itemid"].nunique(),
            "entry_itemid": g["itemid"].first(),
            "exit_itemid": g["itemid"].last(),
            "flags": _or_flags(e, ["sid"]),
        }
    )
    sessions["duration_ms"] = sessions["end_ms"] - sessions["start_ms"]
    sessions["bounced"] = sessions["events"] == 1
    sessions["converted"] = sessions["transactions"] > 0
    sessions["cart_abandoned"] = (sessions["addtocarts"] > 0) & (sessions["transactions"] == 0)

    funnel = []
    for grain, ms in (("hour", HOUR_MS), ("day", DAY_MS)):
        s = sessions.assign(period=sessions["start_ms"] // ms * ms)
        by_session = s.groupby(["period", "flags"]).agg(
            sessions=("events", "size"), bounced=("bounced", "sum")
        )
        bits = s.assign(
            view=s["views"] > 0, addtocart=s["addtocarts"] > 0, transaction=s["transactions"] > 0
        ).astype({"view": np.int64, "addtocart": np.int64, "transaction": np.int64})
        by_visitor = (
            _or_flags(bits, ["period", "visitorid"])
            .reset_index()
            .groupby(["period", "flags"])
            .size()
            .rename("visitors")
        )
        both = by_session.join(by_visitor, how="outer").fillna(0).astype(np.int64).reset_index()
        funnel.append(both.assign(grain=grain))
    funnel_counts = pd.concat(funnel)[["grain", "period", "flags", "sessions", "bounced", "visitors"]]

    lengths = (
        sessions.assign(hour=sessions["start_ms"] // HOUR_MS * HOUR_MS)
        .groupby(["hour", "duration_ms"])
        .size()
        .rename("sessions")
        .reset_index()
    )

    e["categoryid"] = e["itemid"].map(categories).fillna(-1).astype(np.int64)
    per_item = []
    for key in ("itemid", "categoryid"):
        session_flags = _or_flags(e, ["sid", key]).reset_index()
        sessions_of = session_flags.groupby([key, "flags"]).size().rename("sessions")
        visitor_flags = _or_flags(e, ["visitorid", key]).reset_index()
        visitors_of = visitor_flags.groupby([key, "flags"]).size().rename("visitors")
        per_item.append(
            sessions_of.to_frame().join(visitors_of, how="outer").fillna(0).astype(np.int64).reset_index()
        )

    day = sessions["start_ms"] // DAY_MS
    sessions["week"] = (day - (day + 3) % 7) * DAY_MS
    cohort = sessions.groupby("visitorid")["week"].min().rename("cohort")
    weeks = sessions[["visitorid", "week"]].drop_duplicates().join(cohort, on="visitorid")
    weeks["weeks_after"] = (weeks["week"] - weeks["cohort"]) // (7 * DAY_MS)
    retention = weeks.groupby(["cohort", "weeks_after"]).size().rename("visitors").reset_index()
    per_visitor = sessions.groupby("visitorid").size().rename("sessions").to_frame().join(cohort)
    per_visitor["returning"] = per_visitor["sessions"] - 1
    cohort_sessions = per_visitor.groupby("cohort")[["sessions", "returning"]].sum().reset_index()
    return {
        "sessions": sessions[SESSION_COLUMNS],
        "funnel_counts": funnel_counts,
        "session_lengths": lengths,
        "item_funnel_counts": per_item[0],
        "item_funnel_totals": _item_totals(per_item[0]),
        "category_funnel_counts": per_item[1],
        "retention_counts": retention,
        "cohort_sessions": cohort_sessions,
    }


# Per item: the sessions (visitors) whose flags hold each of these bits (view 1, cart 2, buy 4).
ITEM_TOTALS = {
    "sessions_viewed": ("sessions", 1),
    "sessions_carted": ("sessions", 2),
    "sessions_bought": ("sessions", 4),
    "sessions_viewed_carted": ("sessions", 3),
    "sessions_carted_bought": ("sessions", 6),
    "sessions_viewed_bought": ("sessions", 5),
    "visitors_viewed": ("visitors", 1),
    "visitors_carted": ("visitors", 2),
    "visitors_bought": ("visitors", 4),
}


def _item_totals(counts: pd.DataFrame) -> pd.DataFrame:
    """One row per item, summed in pandas from the per item counts by flags."""
    out = pd.DataFrame({"itemid": counts["itemid"]})
    for name, (column, bits) in ITEM_TOTALS.items():
        out[name] = counts[column].where((counts["flags"] & bits) == bits, 0)
    return out.groupby("itemid", as_index=False).sum()


# The stored tables in the reference's shape: periods and weeks as epoch ms.
STORED = {
    "sessions": f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions",
    "funnel_counts": "SELECT grain, (extract(epoch FROM period_start) * 1000)::bigint AS period, flags, sessions,"
    " bounced, visitors FROM funnel_counts",
    "session_lengths": "SELECT (extract(epoch FROM hour_start) * 1000)::bigint AS hour, duration_ms, sessions"
    " FROM session_lengths",
    "item_funnel_counts": "SELECT itemid, flags, sessions, visitors FROM item_funnel_counts",
    "item_funnel_totals": f"SELECT itemid, {', '.join(ITEM_TOTALS)} FROM item_funnel_totals",
    "category_funnel_counts": "SELECT categoryid, flags, sessions, visitors FROM category_funnel_counts",
    "retention_counts": "SELECT (cohort_week - date '1970-01-01')::bigint * 86400000 AS cohort, weeks_after,"
    " visitors FROM retention_counts",
    "cohort_sessions": "SELECT (cohort_week - date '1970-01-01')::bigint * 86400000 AS cohort, sessions,"
    " returning_sessions AS returning FROM cohort_sessions",
}


def stored(conn: psycopg.Connection) -> dict[str, pd.DataFrame]:
    out = {}
    for name, query in STORED.items():
        cur = conn.execute(query)
        columns = [d.name for d in cur.description or []]
        out[name] = pd.DataFrame(cur.fetchall(), columns=columns)
    return out


def normalized(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorted by every column, plain int64 / bool / str values, a fresh index: comparable row for row."""
    f = frame.copy()
    for c in f.columns:
        if c != "grain" and f[c].dtype != bool:
            f[c] = f[c].astype(np.int64)
    return f.sort_values(list(f.columns)).reset_index(drop=True)


def differences(expected: dict[str, pd.DataFrame], actual: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Per table that differs, what differs (empty: every table matches row for row)."""
    out = {}
    for name, want in expected.items():
        a, b = normalized(want), normalized(actual[name][list(want.columns)])
        if len(a) != len(b) or not a.equals(b):
            merged = a.merge(b, how="outer", indicator=True)
            bad = merged[merged["_merge"] != "both"]
            out[name] = f"{len(a)} expected rows, {len(b)} stored; first differences:\n{bad.head(6)}"
    return out
