"""The session protocol and next-item predictors on hand-made sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.ml.config import SessionConfig
from clickstream_dagster.ml.nextitem import (
    MarkovPredictor,
    PopularityPredictor,
    SKNNPredictor,
    build_prefixes,
    evaluate_next_item,
    session_data,
    sessionize,
)

T0 = 1_433_000_000_000
MIN = 60_000
CUT = T0 + 1000 * MIN  # the test start
A, B, C, D = 1, 2, 3, 4


def views(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(timestamp, visitorid, itemid) views as an events frame."""
    return pd.DataFrame(
        {
            "timestamp": [t for t, _, _ in rows],
            "visitorid": [v for _, v, _ in rows],
            "event": "view",
            "itemid": [i for _, _, i in rows],
            "transactionid": None,
        }
    )


def session_rows(visitor: int, start: int, items: list[int]) -> list[tuple[int, int, int]]:
    return [(start + n * MIN, visitor, item) for n, item in enumerate(items)]


def test_sessionize_splits_on_gaps_over_30_minutes() -> None:
    frame = views([(T0, 1, A), (T0 + 30 * MIN, 1, B), (T0 + 61 * MIN, 1, C), (T0, 2, A)])
    frame.loc[len(frame)] = [T0 + MIN, 1, "addtocart", A, None]  # not a view: ignored
    s = sessionize(frame, 30)
    # 0 -> 30 min is not more than 30 (same session); 30 -> 61 min is: a new one. Visitor 2 has its own.
    assert s.groupby("session")["itemid"].apply(list).tolist() == [[A, B], [C], [A]]


def tiny_sessions(cfg: SessionConfig) -> tuple[pd.DataFrame, SessionConfig]:
    rows = (
        session_rows(1, T0, [A, B])
        + session_rows(2, T0 + 100 * MIN, [A, B])
        + session_rows(3, T0 + 200 * MIN, [A, C])
        + session_rows(4, T0 + 300 * MIN, [D])  # one view: dropped
        + session_rows(5, CUT - MIN, [A, B])  # spans the cut: dropped
        + session_rows(6, CUT + 10 * MIN, [A, B, C])  # the test session
        + session_rows(7, CUT + 100 * MIN, [A, D])  # D never in train: removed, then too short
    )
    return views(rows), cfg


def test_session_data_filters_and_splits() -> None:
    events, cfg = tiny_sessions(SessionConfig(min_item_events=1))
    data = session_data(events, CUT, cfg)
    assert data.item_ids.tolist() == [A, B, C]
    assert data.counts["train_sessions"] == 3
    assert data.counts["sessions_spanning_cut"] == 1
    assert data.test.groupby("session")["itemid"].apply(list).tolist() == [[A, B, C]]
    # With the published item support (5 views) only A (6 views) survives, and no session keeps 2 views.
    assert session_data(events, CUT, SessionConfig()).item_ids.tolist() == []


def test_prefixes_and_recency_weights() -> None:
    test = pd.DataFrame({"session": [0, 0, 0, 1, 1], "item": [0, 1, 0, 2, 1]})
    p = build_prefixes(test, 3)
    # Session 0 gives prefixes [0] -> 1 and [0, 1] -> 0; session 1 gives [2] -> 1. Grouped by session length.
    by_target = sorted(zip(p.length.tolist(), p.last.tolist(), p.target.tolist(), strict=True))
    assert by_target == [(1, 0, 1), (1, 2, 1), (2, 1, 0)]
    row = int(np.flatnonzero(p.length == 2)[0])
    assert p.query[row].toarray().ravel().tolist() == pytest.approx(
        [0.5, 1.0, 0.0]
    )  # last item 1, before 1/2


def test_markov_and_popularity_hr_mrr_by_hand() -> None:
    events, cfg = tiny_sessions(SessionConfig(min_item_events=1, cutoff=2))
    data = session_data(events, CUT, cfg)
    table = evaluate_next_item(
        [MarkovPredictor(), PopularityPredictor(), SKNNPredictor(10)], data, cfg
    ).set_index("model")
    # Test session A B C: predict B from [A], then C from [A, B]. Train transitions: A->B twice, A->C once.
    # Markov: B scores 2 (rank 1). From B nothing was seen: every item ties at 0, C ranks 3 > cutoff 2.
    assert table.loc["markov", "hr@2"] == pytest.approx(1 / 2)
    assert table.loc["markov", "mrr@2"] == pytest.approx((1 + 0) / 2)
    # Popularity (train views): A 3, B 2, C 1. B ranks 2 (hit, 1/2); C ranks 3 (miss).
    assert table.loc["pop", "hr@2"] == pytest.approx(1 / 2)
    assert table.loc["pop", "mrr@2"] == pytest.approx((1 / 2 + 0) / 2)
    # SKNN, prefix [A]: the 3 train sessions all hold A, cosine 1/sqrt(2) each; B is in two (sum 1.41),
    # A in three (2.12), C in one (0.71) -> B ranks 2. Prefix [A, B]: sessions {A,B} have cosine 1,
    # {A,C} 1/2 -> A 2.5, B 2, C 0.5: C ranks 3, a miss.
    assert table.loc["sknn", "hr@2"] == pytest.approx(1 / 2)
    assert table.loc["sknn", "mrr@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert (table["predictions"] == 2).all()
