"""How a visitor's answer is made: the live session's rules, the scoring of its neighbours and the blend
(pure, no I/O).

What changes live comes from one query (sql/api.py, VISITOR_SESSION): what the visitor bought (any time)
and the events of their live session. The promoted model's lists come from memory (api/answers.py). From
them (`visitor_rows`):
- excluded: everything the visitor bought, and the items of the live session's newest `on_screen` events
  (what the page is showing or what was just put in the cart);
- session: the neighbours of the live session's items in the model's similar items, each scored by the sum
  over the session's events of event weight x recency decay x similarity, the excluded left out, best first
  (ties: the lower item id), at most k;
- model: the visitor's precomputed list, the excluded left out, at most k.

The blend: session neighbours first, then the model's list, then the popular list topped up from trending,
each item once, the excluded never, until k items. The answer's `source` is the part its first item comes
from; every item also says its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.api.answers import Lists

Source = Literal["session", "model", "popular"]
SOURCES: tuple[Source, ...] = ("session", "model", "popular")

# VISITOR_SESSION's part of a purchase (its other rows, part 1, are the live session's events).
BOUGHT = 0


@dataclass(frozen=True)
class SessionRules:
    """What counts as the live session, and how its events weigh. The gap is the sessions' one rule
    (`analytics.sessions.session_gap_ms`: the `sessions` table, the funnel and the ML job's session protocol
    cut at the same gap); the weights follow the ML job's (view 1, add-to-cart 3, as
    ml.config.EVENT_WEIGHTS_DEFAULT)."""

    events: int = 10  # the visitor's newest views and add-to-carts considered (each weighs its neighbours)
    # a longer gap in event time between two of them ends the session
    gap_s: float = field(default_factory=lambda: session_gap_ms() / 1000)
    live_s: float = 30 * 60  # live only if one of its events was ingested at most this long ago
    on_screen: int = 3  # the items of the session's newest events, left out of every part of the answer
    view_weight: float = 1.0
    cart_weight: float = 3.0
    decay: float = 0.8  # each older event of the session weighs this much of the next newer one

    def params(self) -> dict[str, Any]:
        """VISITOR_SESSION's parameters that do not depend on the request."""
        return {"events": self.events, "gap_ms": int(self.gap_s * 1000), "live_s": float(self.live_s)}

    def weight(self, event: str, pos: int) -> float:
        """How much the session's `pos`-th newest event (1 = newest) weighs its item's neighbours."""
        return (self.cart_weight if event == "addtocart" else self.view_weight) * self.decay ** (pos - 1)


@dataclass(frozen=True)
class VisitorRows:
    excluded: frozenset[int]
    session: list[tuple[int, float]]  # best first
    model: list[tuple[int, float]]  # by rank


def visitor_rows(
    rows: Sequence[tuple[Any, ...]],
    recommendations: Lists,
    similar: Lists,
    visitor: int,
    k: int,
    rules: SessionRules,
) -> VisitorRows:
    """The parts of a visitor's answer from VISITOR_SESSION's (part, itemid, event, pos) rows and the model's
    lists in memory."""
    excluded: set[int] = set()
    weights: dict[int, float] = {}
    for part, itemid, event, pos in rows:
        item = int(itemid)
        if part == BOUGHT:
            excluded.add(item)
            continue
        weights[item] = weights.get(item, 0.0) + rules.weight(event, int(pos))
        if pos <= rules.on_screen:
            excluded.add(item)
    scores: dict[int, float] = {}
    for item, weight in weights.items():
        for neighbour, similarity in similar.get(item):
            if neighbour not in excluded:
                scores[neighbour] = scores.get(neighbour, 0.0) + weight * similarity
    session = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    model: list[tuple[int, float]] = []
    for item, score in recommendations.get(visitor):
        if len(model) == k:
            break
        if item not in excluded:
            model.append((item, score))
    return VisitorRows(frozenset(excluded), session, model)


def blend(
    rows: VisitorRows, fallback: Sequence[tuple[int, float]], k: int
) -> tuple[Source, list[tuple[int, float, Source]]]:
    """The answer's source and its items (itemid, score, source): session, then model, then fallback, each
    item once, never an excluded one, at most k. A score is only comparable within its own source."""
    source: Source = "session" if rows.session else "model" if rows.model else "popular"
    items: list[tuple[int, float, Source]] = []
    listed = set(rows.excluded)
    parts: tuple[tuple[Source, Sequence[tuple[int, float]]], ...] = (
        ("session", rows.session),
        ("model", rows.model),
        ("popular", fallback),
    )
    for part, candidates in parts:
        for item, score in candidates:
            if len(items) == k:
                return source, items
            if item not in listed:
                listed.add(item)
                items.append((item, score, part))
    return source, items
