"""Live sessions: events in clickstream_events change the answer at once, with no retraining; bought items never
come back; k is honoured up to the API's maximum. Real HTTP, real PostgreSQL, a real LightFM model's rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI

from clickstream_dagster.api import create_app
from clickstream_dagster.api.app import MAX_K
from clickstream_dagster.api.session import SessionRules
from clickstream_dagster.ml import popular_items
from tests.api.conftest import (
    VERSION_TTL_S,
    ApiServer,
    Event,
    Served,
    TrainedModel,
    ingest,
    publish,
)

RULES = SessionRules()


def answer(client: httpx.Client, visitor: int, k: int = 10) -> tuple[str, list[int], list[dict]]:
    r = client.get(f"/recommendations/{visitor}", params={"k": k})
    assert r.status_code == 200, r.text
    body = r.json()
    items = [i["itemid"] for i in body["items"]]
    assert [i["rank"] for i in body["items"]] == list(range(1, len(items) + 1))
    assert len(items) == len(set(items)), "an item twice"
    return body["source"], items, body["items"]


def new_visitor(model: TrainedModel, offset: int = 0) -> int:
    """A visitor id the model has never seen."""
    return int(model.recommendations["visitorid"].max()) + 1_000_003 + offset


def catalogue(model: TrainedModel, n: int, avoid: set[int] | None = None) -> list[int]:
    """`n` items with neighbours whose neighbour lists do not overlap (so each one's share is visible)."""
    chosen: list[int] = []
    taken = set(avoid or ())
    lists: dict[int, set[int]] = defaultdict(set)
    for item, similar in zip(
        model.similar["itemid"].tolist(), model.similar["similar_itemid"].tolist(), strict=True
    ):
        lists[int(item)].add(int(similar))
    for item, neighbours in lists.items():
        if item in taken or neighbours & taken:
            continue
        chosen.append(item)
        taken |= neighbours | {item}
        if len(chosen) == n:
            return chosen
    raise AssertionError(f"fewer than {n} items with disjoint neighbours")


def session_ranking(model: TrainedModel, newest_first: list[tuple[str, int]], exclude: set[int]) -> list:
    """The session part as the rules define it: per candidate, sum over the session's events (newest first) of
    event weight x decay^position x similarity; best first, ties by item id."""
    scores: dict[int, float] = defaultdict(float)
    sims = model.similar
    for pos, (event, item) in enumerate(newest_first):
        weight = (RULES.cart_weight if event == "addtocart" else RULES.view_weight) * RULES.decay**pos
        rows = sims.loc[sims["itemid"] == item]
        for candidate, sim in zip(rows["similar_itemid"].tolist(), rows["score"].tolist(), strict=True):
            scores[int(candidate)] += weight * float(sim)
    ranked = sorted(((-s, i) for i, s in scores.items() if i not in exclude))
    return [(i, -s) for s, i in ranked]


def test_a_new_visitor_who_viewed_three_items_gets_their_neighbours(
    served: Served, model_a: TrainedModel
) -> None:
    visitor = new_visitor(model_a)
    assert answer(served.client, visitor)[0] == "popular"
    viewed = catalogue(model_a, 3)
    ingest(served.url, [Event(visitor, "view", item, minute=i) for i, item in enumerate(viewed)])

    source, items, rows = answer(served.client, visitor)
    assert source == "session"
    assert {r["source"] for r in rows} == {"session"}
    neighbours = {n for item in viewed for n in model_a.similar_to(item)}
    assert set(items) <= neighbours
    assert not set(items) & set(viewed), "recommended an item on screen"
    expected = session_ranking(model_a, [("view", i) for i in reversed(viewed)], set(viewed))
    assert items == [i for i, _ in expected][:10]
    assert [r["score"] for r in rows] == pytest.approx([s for _, s in expected][:10], rel=1e-6)
    assert items[0] == model_a.similar_to(viewed[-1])[0]  # the newest view weighs most
    # Long enough, the session part is every neighbour of the three items, then the popular list.
    _, items, rows = answer(served.client, visitor, k=MAX_K)
    session_part = [r["itemid"] for r in rows if r["source"] == "session"]
    assert session_part == [i for i, _ in expected]
    assert set(session_part) == neighbours - set(viewed)
    assert (
        items[len(session_part) :]
        == [i for i in model_a.fallback() if i not in {*neighbours, *viewed}][: MAX_K - len(session_part)]
    )


def test_a_new_event_changes_a_known_visitors_answer_at_once(served: Served, model_a: TrainedModel) -> None:
    visitor = next(
        v for v in model_a.recommendations["visitorid"].unique().tolist() if v not in model_a.purchased
    )
    source, items, _ = answer(served.client, visitor)
    assert (source, items) == ("model", model_a.recs_of(visitor)[:10])

    viewed, carted = catalogue(model_a, 2, avoid=set(model_a.recs_of(visitor)))
    ingest(served.url, [Event(visitor, "view", viewed, minute=0)])
    # No retraining, no wait: the next request follows the session.
    source, items, rows = answer(served.client, visitor, k=30)
    assert source == "session"
    assert items[:20] == model_a.similar_to(viewed)  # one event: the item's own neighbours, in order
    assert [r["source"] for r in rows] == ["session"] * 20 + ["model"] * 10
    assert items[20:] == model_a.recs_of(visitor)[:10]  # then the model's list

    # A newer add-to-cart weighs more than the view: its neighbours lead now.
    ingest(served.url, [Event(visitor, "addtocart", carted, minute=5)])
    source, items, _ = answer(served.client, visitor)
    expected = session_ranking(model_a, [("addtocart", carted), ("view", viewed)], {viewed, carted})
    assert source == "session"
    assert items == [i for i, _ in expected][:10]
    assert items[0] == model_a.similar_to(carted)[0]


def test_the_session_ends_at_a_30_minute_gap_and_must_be_live(served: Served, model_a: TrainedModel) -> None:
    earlier, later = catalogue(model_a, 2)
    gap_minutes = RULES.gap_s / 60 + 1
    visitor = new_visitor(model_a)
    ingest(
        served.url,
        [Event(visitor, "view", earlier, minute=0), Event(visitor, "view", later, minute=gap_minutes)],
    )
    source, items, _ = answer(served.client, visitor, k=20)
    assert source == "session"
    assert items == model_a.similar_to(later)  # the earlier visit is another session

    # Events ingested longer ago than the live window are history, not a live session.
    stale = new_visitor(model_a, offset=1)
    ingest(served.url, [Event(stale, "view", later)], ingested_ago_s=RULES.live_s + 60)
    assert answer(served.client, stale)[0] == "popular"
    known = int(model_a.recommendations["visitorid"].iloc[0])
    ingest(served.url, [Event(known, "view", later)], ingested_ago_s=RULES.live_s + 60)
    assert answer(served.client, known)[:2] == ("model", model_a.recs_of(known)[:10])


def test_no_answer_contains_an_item_the_visitor_bought(served: Served, model_a: TrainedModel) -> None:
    bought: dict[int, set[int]] = {}
    # A known visitor bought the top of their model list (a day ago, after the model was trained).
    known = int(model_a.recommendations["visitorid"].iloc[0])
    bought[known] = set(model_a.recs_of(known)[:3])
    # A cold visitor bought the first popular items (and has no live session).
    cold = new_visitor(model_a)
    bought[cold] = set(model_a.fallback()[:3])
    purchases = [
        Event(v, "transaction", item, minute=-600, transactionid=n)
        for n, (v, items) in enumerate(bought.items())
        for item in sorted(items)
    ]
    ingest(served.url, purchases, ingested_ago_s=86_400)
    # A visitor with a live session bought two of the viewed item's nearest neighbours.
    (viewed,) = catalogue(model_a, 1)
    shopper = new_visitor(model_a, offset=1)
    bought[shopper] = set(model_a.similar_to(viewed)[:2])
    ingest(
        served.url,
        [Event(shopper, "view", viewed, minute=0)]
        + [Event(shopper, "transaction", i, minute=1, transactionid=99) for i in sorted(bought[shopper])],
    )

    source, items, _ = answer(served.client, known)
    assert source == "model"
    assert items == [i for i in model_a.recs_of(known) if i not in bought[known]][:10]
    source, items, _ = answer(served.client, cold)
    assert source == "popular"
    assert items == [i for i in model_a.fallback() if i not in bought[cold]][:10]
    source, items, _ = answer(served.client, shopper)
    assert source == "session"
    assert items == [i for i in model_a.similar_to(viewed) if i not in bought[shopper]][:10]
    # Whatever the part and however long the answer.
    for visitor, items_bought in bought.items():
        for k in (1, 10, 25, MAX_K):
            _, items, _ = answer(served.client, visitor, k=k)
            assert not set(items) & items_bought, (visitor, k)


def test_answers_honour_k_up_to_the_maximum(
    database_factory: Callable[..., str],
    model_a: TrainedModel,
    events_and_items: tuple[pd.DataFrame, pd.DataFrame],
    api_server_factory: Callable[[FastAPI], ApiServer],
) -> None:
    """The stored lists are 20 deep (recommendations, similar items): longer answers are filled from the
    popular and trending lists (here 100 each, as the ML job writes them)."""
    long_lists = replace(model_a, popular=popular_items(events_and_items[0], n=100))
    url = database_factory()
    publish(url, long_lists)
    server = api_server_factory(create_app(url, version_ttl_s=VERSION_TTL_S))
    known = int(model_a.recommendations["visitorid"].iloc[0])
    cold = new_visitor(model_a)
    (viewed,) = catalogue(model_a, 1)
    fresh = new_visitor(model_a, offset=1)
    ingest(url, [Event(fresh, "view", viewed)])
    fallback = long_lists.fallback()
    assert len(fallback) >= MAX_K + 20
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for k in (1, 19, 20, 21, 57, MAX_K):
            source, items, rows = answer(client, known, k=k)
            model_part = model_a.recs_of(known)
            assert (source, len(items)) == ("model", k)
            assert items == (model_part + [i for i in fallback if i not in model_part])[:k]
            assert [r["source"] for r in rows] == (["model"] * 20 + ["popular"] * MAX_K)[:k]

            source, items, _ = answer(client, cold, k=k)
            assert (source, items) == ("popular", fallback[:k])

            source, items, rows = answer(client, fresh, k=k)
            session_part = model_a.similar_to(viewed)
            assert (source, len(items)) == ("session", k)
            assert items == (session_part + [i for i in fallback if i not in {*session_part, viewed}])[:k]
