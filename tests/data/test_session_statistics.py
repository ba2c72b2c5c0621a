from __future__ import annotations

import math

import pandas as pd
import pytest

from clickstream_dagster.data.generator import session_statistics

MINUTE = 60_000


def events_frame() -> pd.DataFrame:
    rows = [
        # visitor 1: one session 10, 10, 20, 10 (a cart in between is not a view), then 31 minutes later 30
        (0, 1, "view", 10),
        (1 * MINUTE, 1, "view", 10),
        (1 * MINUTE + 1, 1, "addtocart", 10),
        (2 * MINUTE, 1, "view", 20),
        (3 * MINUTE, 1, "view", 10),
        (34 * MINUTE, 1, "view", 30),
        # visitor 2: 20, 30; visitor 3: 40, 40 exactly 30 minutes apart (still one session)
        (0, 2, "view", 20),
        (10_000, 2, "view", 30),
        (0, 3, "view", 40),
        (30 * MINUTE, 3, "view", 40),
    ]
    frame = pd.DataFrame(rows, columns=["timestamp", "visitorid", "event", "itemid"])
    return frame.sample(frac=1.0, random_state=0)  # unsorted, like the real file


def test_every_session_as_it_is() -> None:
    stats = session_statistics(events_frame(), min_item_views=1, min_session_views=1)
    # sessions [10, 10, 20, 10], [30], [20, 30], [40, 40]
    assert (stats.sessions, stats.views) == (4, 9)
    assert stats.mean_length == pytest.approx(9 / 4) and stats.median_length == 2.0
    assert stats.mean_distinct_items == pytest.approx((2 + 1 + 2 + 1) / 4)
    next_views = 9 - 4
    assert stats.repeat_view_share == pytest.approx((9 - 6) / next_views)  # 10, 10 and 40 seen before
    assert stats.same_item_share == pytest.approx(2 / next_views)  # 10 -> 10 and 40 -> 40


def test_protocol_filters() -> None:
    # sessions shorter than 2 views go: [10, 10, 20, 10], [20, 30], [40, 40]
    stats = session_statistics(events_frame(), min_item_views=1)
    assert (stats.sessions, stats.views, stats.median_length) == (3, 8, 2.0)
    assert stats.repeat_view_share == pytest.approx((8 - 5) / 5)
    assert stats.same_item_share == pytest.approx(2 / 5)
    # items with fewer than 3 views go first (only item 10 is left): one session [10, 10, 10]
    stats = session_statistics(events_frame(), min_item_views=3)
    assert (stats.sessions, stats.views, stats.mean_distinct_items) == (1, 3, 1.0)
    assert stats.repeat_view_share == 1.0 and stats.same_item_share == 1.0
    assert "1 sessions, 3 views" in str(stats)


def test_no_next_views() -> None:
    frame = events_frame()
    stats = session_statistics(frame, min_item_views=100)
    assert (stats.sessions, stats.views) == (0, 0) and math.isnan(stats.mean_length)
    stats = session_statistics(frame.iloc[:1].assign(event="view"), min_item_views=1, min_session_views=1)
    assert (stats.sessions, stats.views, stats.mean_length) == (1, 1, 1.0)
    assert math.isnan(stats.repeat_view_share) and math.isnan(stats.same_item_share)
