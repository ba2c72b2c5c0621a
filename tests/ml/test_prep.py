"""Cleaning counts, interaction weights, the time split and features, on hand-made frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.ml.config import CleaningConfig, InteractionConfig, SplitConfig
from clickstream_dagster.ml.features import hourly_profile, item_feature_matrix, item_stats, visitor_features
from clickstream_dagster.ml.prep import (
    DAY_MS,
    InteractionMatrix,
    apply_min_support,
    build_interactions,
    clean_events,
    items_table,
)
from clickstream_dagster.ml.split import time_split

T0 = 1_433_000_000_000  # 2015-05-30T15:33:20Z
HOUR = 3_600_000


def row(table: pd.DataFrame, key: int, columns: list[str]) -> list[Any]:
    return [table.at[key, c] for c in columns]


def frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["timestamp", "visitorid", "event", "itemid", "transactionid"])


def test_cleaning_counts_every_step() -> None:
    rows: list[tuple[object, ...]] = [
        (T0, 1, "view", 10, None),
        (T0, 1, "view", 10, None),  # exact duplicate
        (T0 + 1000, 1, "addtocart", 10, None),
        (T0 + 2000, 1, "transaction", 10, 7),
        (None, 2, "view", 10, None),  # missing timestamp
        (T0, 2, "view", None, None),  # missing itemid
        (T0, 2, "click", 10, None),  # unknown event type
        (T0 + 5000, 2, "view", 11, None),
    ]
    # Visitor 9 views 101 pages within one hour: more than max_events_per_hour (100), fewer than 300/day.
    rows += [(T0 + i * 30_000, 9, "view", 100 + i, None) for i in range(101)]
    cleaned, counts = clean_events(frame(rows), CleaningConfig())
    assert counts["rows_in"] == 8 + 101
    assert counts["missing_values"] == 2
    assert counts["unknown_event_type"] == 1
    assert counts["duplicate_events"] == 1
    assert counts["bot_visitors"] == 1
    assert counts["bot_visitors_events_per_hour"] == 1
    assert counts["bot_visitors_events_per_day"] == 0
    assert counts["bot_events"] == 101
    assert counts["rows_out"] == 4
    assert cleaned["timestamp"].is_monotonic_increasing
    assert sorted(cleaned["visitorid"].unique().tolist()) == [1, 2]
    assert cleaned["transactionid"].dropna().tolist() == [7]


def test_bot_rule_on_views_without_carts() -> None:
    # 50 visitors with 1 view; visitor 7 with 30 views and no cart; visitor 8 with 30 views and 3 carts.
    rows: list[tuple[object, ...]] = [(T0 + v * DAY_MS, 1000 + v, "view", 1, None) for v in range(50)]
    rows += [(T0 + i * DAY_MS, 7, "view", i, None) for i in range(30)]
    rows += [(T0 + i * DAY_MS, 8, "view", i, None) for i in range(30)]
    rows += [(T0 + i * DAY_MS + 1, 8, "addtocart", i, None) for i in range(3)]
    cfg = CleaningConfig(bot_view_quantile=0.9, bot_min_views=20, bot_max_cart_rate=0.001)
    _, counts = clean_events(frame(rows), cfg)
    assert counts["bot_visitors_views_no_carts"] == 1  # 7 only: 8 adds to cart
    assert counts["bot_events"] == 30
    _, counts = clean_events(frame(rows), CleaningConfig())  # the default floor of 1,000 views keeps 7
    assert counts["bot_visitors"] == 0


def test_min_support_items_then_visitors() -> None:
    events, _ = clean_events(
        frame(
            [
                (T0, 1, "view", 10, None),
                (T0 + 1, 1, "view", 11, None),  # item 11 has one event: dropped
                (T0 + 2, 2, "view", 10, None),
                (T0 + 3, 2, "view", 10, None),
                (T0 + 4, 3, "view", 10, None),  # visitor 3 keeps one event: dropped
            ]
        )
    )
    kept, counts = apply_min_support(events, CleaningConfig(min_item_events=2, min_visitor_events=2))
    assert counts["items_below_support"] == 1
    assert counts["item_support_events"] == 1
    # After item 11 goes, visitor 1 has 1 event and visitor 3 has 1: both dropped.
    assert counts["visitors_below_support"] == 2
    assert counts["visitor_support_events"] == 2
    assert kept["visitorid"].tolist() == [2, 2]


def test_interaction_weights_with_decay_by_hand() -> None:
    events, _ = clean_events(
        frame(
            [
                (T0, 1, "view", 10, None),  # 2 days old: 1 * 0.5**2
                (T0 + DAY_MS, 1, "addtocart", 10, None),  # 1 day old: 3 * 0.5
                (T0 + 2 * DAY_MS, 1, "transaction", 10, 5),  # newest: 5
                (T0 + 2 * DAY_MS, 2, "view", 10, None),  # 1
            ]
        )
    )
    cfg = InteractionConfig(
        event_weights={"view": 1.0, "addtocart": 3.0, "transaction": 5.0}, half_life_days=1.0
    )
    table = build_interactions(events, cfg).set_index("visitorid")
    assert table.loc[1, "weight"] == pytest.approx(0.25 + 1.5 + 5.0)
    assert row(table, 1, ["views", "carts", "purchases"]) == [1, 1, 1]
    assert table.loc[2, "weight"] == pytest.approx(1.0)
    no_decay = build_interactions(events, InteractionConfig(half_life_days=None)).set_index("visitorid")
    assert no_decay.loc[1, "weight"] == pytest.approx(9.0)

    matrix = InteractionMatrix.from_interactions(build_interactions(events, cfg))
    assert matrix.shape == (2, 1)
    assert matrix.purchased.toarray().tolist() == [[1.0], [0.0]]
    assert matrix.user_index([2, 3]).tolist() == [1, -1]


def test_time_split_is_time_ordered_with_exact_cut_points() -> None:
    events, _ = clean_events(frame([(T0 + i, i % 3, "view", i, None) for i in range(1, 21)]))
    split = time_split(events, SplitConfig())
    # 20 timestamps; quantile 0.70 (method "higher") is the 15th, 0.85 the 18th: 14 / 3 / 3 events.
    assert (len(split.train), len(split.validation), len(split.test)) == (14, 3, 3)
    assert split.validation_start_ms == T0 + 15
    assert split.test_start_ms == T0 + 18
    assert split.train["timestamp"].max() < split.validation_start_ms <= split.validation["timestamp"].min()
    assert split.validation["timestamp"].max() < split.test_start_ms <= split.test["timestamp"].min()
    with pytest.raises(ValueError, match="sum to 1"):
        time_split(events, SplitConfig(0.7, 0.2, 0.2))


def test_items_table_and_item_features() -> None:
    tree = pd.DataFrame({"categoryid": [1, 2, 3], "parentid": pd.array([None, 1, 2], dtype="Int64")})
    props = pd.DataFrame(
        {
            "timestamp": [1, 2, 1, 1, 2],
            "itemid": [10, 10, 10, 11, 11],
            "property": ["categoryid", "categoryid", "available", "categoryid", "available"],
            "value": ["2", "3", "1", "1", "0"],
        }
    )
    items = items_table(tree, props).set_index("itemid")
    assert items.loc[10, "categoryid"] == 3  # the latest snapshot wins
    assert items.loc[10, "category_path"] == [3, 2, 1]
    assert bool(items.loc[10, "available"]) is True
    assert bool(items.loc[11, "available"]) is False

    feats = item_feature_matrix(
        np.array([10, 11, 12]),
        items.reset_index(),
        category_weight=0.6,
        availability_weight=0.4,
        normalize=False,
    )
    dense = pd.DataFrame(feats.matrix.toarray(), index=[10, 11, 12], columns=feats.names)
    # Item 10: identity 1, its three path categories share 0.6, available 0.4.
    assert row(
        dense, 10, ["item:10", "category:1", "category:2", "category:3", "available"]
    ) == pytest.approx([1.0, 0.2, 0.2, 0.2, 0.4])
    assert row(dense, 11, ["category:1", "unavailable"]) == pytest.approx([0.6, 0.4])
    assert dense.loc[12].sum() == pytest.approx(1.0)  # unknown item: identity only
    normalized = item_feature_matrix(np.array([10, 11, 12]), items.reset_index())
    assert np.asarray(normalized.matrix.sum(axis=1)).ravel() == pytest.approx([1.0, 1.0, 1.0])
    # No category weight: no category columns at all (not columns of stored zeros LightFM would still visit).
    identity = item_feature_matrix(np.array([10, 11, 12]), items.reset_index(), category_weight=0.0)
    assert not any(name.startswith("category:") for name in identity.names)
    assert identity.matrix.nnz == 3 + 2 and (identity.matrix.data > 0).all()  # identity, availability


def test_visitor_and_item_features() -> None:
    events, _ = clean_events(
        frame(
            [
                (T0, 1, "view", 10, None),
                (T0 + 60_000, 1, "addtocart", 10, None),
                (T0 + 2 * HOUR, 1, "view", 11, None),  # a new session (gap > 30 min), another hour
                (T0 + 10 * DAY_MS, 2, "view", 10, None),
            ]
        )
    )
    ref = T0 + 10 * DAY_MS
    v = visitor_features(events, ref).set_index("visitorid")
    assert row(v, 1, ["events", "views", "carts", "sessions", "distinct_items"]) == [3, 2, 1, 2, 2]
    assert v.loc[1, "cart_rate"] == pytest.approx(0.5)
    assert v.loc[1, "active_hours"] == 2
    assert v.loc[1, "peak_hour"] == (T0 // HOUR) % 24  # two of its three events
    assert v.loc[1, "recency_days"] == pytest.approx(10 - 2 / 24)
    assert v.loc[2, "recency_days"] == 0.0

    s = item_stats(events, ref, recent_days=7, baseline_days=28).set_index("itemid")
    assert row(s, 10, ["events", "views", "carts", "visitors"]) == [3, 2, 1, 2]
    # Item 10: 1 event in the last 7 days, 2 in the 28 before: (1+1)/7 over (2+1)/28.
    assert s.loc[10, "trend"] == pytest.approx((2 / 7) / (3 / 28))

    profile = hourly_profile(events)
    assert len(profile) == 24
    assert profile["view_events"].sum() == 3
    assert profile["view_share"].sum() == pytest.approx(1.0)
