"""How a visitor's answer is made: the live session's rules and the blend of its parts (pure, no I/O).

The rows come from one query (sql/serving.py, VISITOR_ANSWER):
- excluded: everything the visitor bought (transaction events, any time) and the items of the live session's
  newest `on_screen` events (what the page is showing or what was just put in the cart);
- session: the neighbours of the live session's items in the promoted model's similar_items;
- model: the visitor's precomputed recommendations of the promoted model.

The blend: session neighbours first (best first), then the model's list, then the popular list topped up
from trending (cached per model version), each item once, the excluded never, until k items. The answer's
`source` is the part its first item comes from; every item also says its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["session", "model", "popular"]
SOURCES: tuple[Source, ...] = ("session", "model", "popular")

# The parts of VISITOR_ANSWER's rows.
EXCLUDED, SESSION, MODEL = 0, 1, 2


@dataclass(frozen=True)
class SessionRules:
    """What counts as the live session, and how its events weigh. The defaults follow the ML job's session
    protocol (a 30-minute gap, as ml.config.SessionConfig) and its event weights (view 1, add-to-cart 3, as
    ml.config.EVENT_WEIGHTS_DEFAULT)."""

    events: int = 10  # the visitor's newest views and add-to-carts considered (each weighs its neighbours)
    gap_s: float = 30 * 60  # a longer gap in event time between two of them ends the session
    live_s: float = 30 * 60  # live only if one of its events was ingested at most this long ago
    on_screen: int = 3  # the items of the session's newest events, left out of every part of the answer
    view_weight: float = 1.0
    cart_weight: float = 3.0
    decay: float = 0.8  # each older event of the session weighs this much of the next newer one

    def params(self) -> dict[str, Any]:
        """VISITOR_ANSWER's parameters that do not depend on the request."""
        return {
            "events": self.events,
            "gap_ms": int(self.gap_s * 1000),
            "live_s": float(self.live_s),
            "on_screen": self.on_screen,
            "view_weight": float(self.view_weight),
            "cart_weight": float(self.cart_weight),
            "decay": float(self.decay),
        }


@dataclass(frozen=True)
class VisitorRows:
    excluded: frozenset[int]
    session: list[tuple[int, float]]  # best first
    model: list[tuple[int, float]]  # by rank


def split_parts(rows: Sequence[tuple[Any, ...]]) -> VisitorRows:
    """VISITOR_ANSWER's (part, itemid, score) rows, by part."""
    excluded: set[int] = set()
    session: list[tuple[int, float]] = []
    model: list[tuple[int, float]] = []
    for part, item, score in rows:
        if part == EXCLUDED:
            excluded.add(int(item))
        elif part == SESSION:
            session.append((int(item), float(score)))
        else:
            model.append((int(item), float(score)))
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
