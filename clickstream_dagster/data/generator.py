"""A deterministic, vectorized generator of RetailRocket-shaped data.

It writes events.csv, category_tree.csv, item_properties_part1.csv and item_properties_part2.csv with the
published headers and formats (see `readers`). The same seed gives byte-identical files.

Scale: "full" reproduces the published event totals exactly (2,756,101 events = 2,664,312 views + 69,332
add-to-carts + 22,457 transactions in 17,672 transaction ids) over 1,407,580 visitors between 2015-05-03
and 2015-09-18 (UTC). An integer is the number of events, and "small" means 30,000 events. Type totals,
visitors and catalog items scale proportionally. The category tree always has its full 1,669 rows and 25
roots.

Volume note: at full scale item_properties holds about 3.5M rows over all 417,053 items, not the published
20.3M, which keeps generation fast. categoryid, available and the price-like property 790 keep their
snapshot histories. The ~1,100 hashed properties are thinned to about 4 per item (the original has about
40). The rows are split between part1 and part2 in the original ratio (54% / 46%).

The model, in the order it is built (every step is a numpy array operation, with no per-event Python loop):
- Catalog: items get Zipf-Mandelbrot popularity and a leaf category. Category sizes are log-normal.
- Visitors: view counts follow a truncated power law fitted to the published mean (most visitors have one
  event). A handful of bots view thousands of random items at crawler speed, at any hour.
- Sessions: each later view starts a new session with a fixed probability. Sessions land on days near the
  visitor's first visit, at an hour drawn from a daily traffic cycle. Events inside a session are seconds to
  minutes apart, never more than 25 minutes, so a 30-minute gap rule recovers the sessions.
- Taste: every visitor prefers three categories. A session mostly stays in one of them, and items are drawn
  by popularity within the category. Each one is new to the session: a draw that repeats an earlier view is
  drawn again.
- Repeats: a later view of a session shows the item on screen again (`SAME_ITEM_P`) or goes back to an
  earlier item of the session (`RETURN_VIEW_P`), as real visitors reload and compare. Under the next-item
  protocol's filters the sessions then look the way the published benchmark implies. `session_statistics`
  measures them, and docs/recommendations.md ("Generated sessions against the published benchmark") gives
  the targets and their sources.
- Funnel: add-to-carts are sampled from views, weighted by a log-normal buying propensity per visitor and a
  shopping mood per session, and happen seconds after their view. A transaction buys one or more carts of
  one session together, at one timestamp after the last of those carts, so each id belongs to one visitor.
- Output: rows are shuffled (as in the original). Item properties are weekly snapshots (Sundays, 03:00 UTC).
  The latest categoryid snapshot of an item is the category that drove its views.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from tqdm import tqdm

from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    CATEGORY_TREE_HEADER,
    EVENTS_FILE,
    EVENTS_HEADER,
    ITEM_PROPERTIES_FILES,
    ITEM_PROPERTIES_HEADER,
)
from clickstream_dagster.events import EVENT_TYPES

Scale = Literal["small", "full"] | int
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ByteMatrix = npt.NDArray[np.uint8]

# Published totals of the full dataset.
FULL_EVENTS = 2_756_101
FULL_VIEWS = 2_664_312
FULL_ADDTOCARTS = 69_332
FULL_TRANSACTIONS = 22_457
FULL_TRANSACTION_IDS = 17_672
FULL_VISITORS = 1_407_580
FULL_CATALOG_ITEMS = 417_053
SMALL_EVENTS = 30_000
MIN_EVENTS = 100
CATEGORY_LEVEL_SIZES = (25, 190, 610, 700, 144)  # 1,669 categories, 25 roots
CATEGORY_ID_RANGE = 1_699  # the published ids run 0..1698
ITEM_ID_RANGE = 466_868  # the published ids run 0..466867
PART1_SHARE = 10_999_999 / 20_275_902  # rows of item_properties_part1 in the original

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SPAN_START_MS = 1_430_622_000_000  # 2015-05-03T03:00:00Z, local midnight at UTC+3
SPAN_DAYS = 138  # to 2015-09-18T03:00:00Z
SPAN_END_MS = SPAN_START_MS + SPAN_DAYS * DAY_MS
END_MARGIN_MS = HOUR_MS  # sessions end by then, so carts and purchases still fit in the span
FIRST_SNAPSHOT_MS = SPAN_START_MS + 7 * DAY_MS  # Sunday 2015-05-10T03:00Z
SNAPSHOTS = 19  # weekly, up to 2015-09-13
WEEK_MS = 7 * DAY_MS

# Traffic by local hour (UTC+3; days start at 03:00 UTC): quiet nights, busy evenings.
HOURLY_TRAFFIC = (
    0.55, 0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.32, 0.55, 0.78, 0.92, 1.00,
    1.02, 1.00, 0.98, 0.97, 0.98, 1.00, 1.05, 1.15, 1.25, 1.28, 1.12, 0.82,
)  # fmt: skip

# Shape parameters, tuned so that full scale lands near the published distinct counts.
ITEM_ZIPF_EXPONENT = 1.25
ITEM_ZIPF_OFFSET = 0.0005  # flattens the head: the top item gets ~4k views at full scale (published ~3.4k)
CATEGORY_SIZE_SIGMA = 1.2
VISITOR_MAX_VIEWS = 1_500  # humans; bots go beyond
BOTS_AT_FULL = 6
NEW_SESSION_P = 0.2
BOT_NEW_SESSION_P = 0.002
RETURN_DAYS_MEAN = 8.0
GAP_MEDIAN_S = 40.0
BOT_GAP_MEDIAN_S = 4.0
MAX_GAP_S = 25 * 60
PREFERRED_CATEGORIES = 3
PREFERENCE_WEIGHTS = (0.6, 0.3, 0.1)
SESSION_IN_PREFERENCE_P = 0.9
EVENT_IN_SESSION_CATEGORY_P = 0.8
EVENT_IN_PREFERENCE_P = 0.1  # else a random category by popularity
NEW_ITEM_DRAWS = 8  # tries to draw an item new to the session; the second half in another category
SAME_ITEM_P = 0.13  # a later view shows the item on screen again
RETURN_VIEW_P = 0.4  # ... or, from the third view on, an earlier item of the session
BUY_PROPENSITY_SIGMA = 3.0
SESSION_MOOD_SIGMA = 2.0
CART_DELAY_MEDIAN_S = 25.0
PURCHASE_DELAY_MEDIAN_S = 90.0
HASHED_PROPERTIES = 1_100
HASHED_PER_ITEM = 3.5
HASHED_TOKEN_RANGE = 1_400_000
WRITE_CHUNK_ROWS = 500_000


@dataclass(frozen=True)
class Plan:
    """How many of everything one scale produces."""

    events: int
    views: int
    addtocarts: int
    transactions: int
    transaction_ids: int
    visitors: int
    catalog_items: int
    bots: int

    @classmethod
    def for_scale(cls, scale: Scale) -> Plan:
        if isinstance(scale, str):
            scale = parse_scale(scale)
        events = FULL_EVENTS if scale == "full" else SMALL_EVENTS if scale == "small" else scale
        if not isinstance(events, int) or isinstance(events, bool) or events < MIN_EVENTS:
            raise ValueError(
                f"scale must be 'small', 'full' or a number of events >= {MIN_EVENTS}, got {scale!r}"
            )

        def part(full: int) -> int:  # integer rounding, so full scale is exact
            return (events * full + FULL_EVENTS // 2) // FULL_EVENTS

        transactions = part(FULL_TRANSACTIONS)
        addtocarts = part(FULL_ADDTOCARTS)
        views = events - addtocarts - transactions
        transaction_ids = (transactions * FULL_TRANSACTION_IDS + FULL_TRANSACTIONS // 2) // FULL_TRANSACTIONS
        return cls(
            events=events,
            views=views,
            addtocarts=addtocarts,
            transactions=transactions,
            transaction_ids=max(transaction_ids, min(transactions, 1)),
            visitors=max(1, part(FULL_VISITORS)),
            catalog_items=max(500, part(FULL_CATALOG_ITEMS)),
            bots=max(2, round(BOTS_AT_FULL * events / FULL_EVENTS)) if events >= 10_000 else 0,
        )


@dataclass(frozen=True)
class GenerationSummary:
    out_dir: Path
    seed: int
    events: int
    views: int
    addtocarts: int
    transactions: int
    transaction_ids: int
    visitors: int
    items_in_events: int
    catalog_items: int
    categories: int
    root_categories: int
    property_rows: int
    file_rows: dict[str, int] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"{self.events:,} events = {self.views:,} views + {self.addtocarts:,} add-to-carts"
            f" + {self.transactions:,} transactions ({self.transaction_ids:,} transaction ids)",
            f"{self.visitors:,} visitors, {self.items_in_events:,} items in events"
            f" of {self.catalog_items:,} in the catalog, {self.categories:,} categories"
            f" ({self.root_categories} roots), {self.property_rows:,} item property rows",
        ]
        out.extend(
            f"  {self.out_dir / name}: {self.file_rows[name]:,} rows, {size / 1e6:,.1f} MB"
            for name, size in self.file_bytes.items()
        )
        out.append(f"{self.seconds:.1f} s")
        return out


def parse_scale(text: str) -> Scale:
    """A CLI value: "small", "full" or a number of events (underscores and commas allowed)."""
    value = text.strip().lower()
    if value in ("small", "full"):
        return "small" if value == "small" else "full"
    digits = value.replace("_", "").replace(",", "")
    if digits.isdigit() and digits.isascii():
        return int(digits)
    raise ValueError(f"scale must be 'small', 'full' or a number of events, got {text!r}")


# --- session statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionStatistics:
    """How the view sessions of an events frame look (see `session_statistics`).

    A "next view" is every view of a session after its first one. `repeat_view_share` is the share of next
    views on an item the session has already viewed; `same_item_share` the share on the very item viewed just
    before (a consecutive repeat, which a predictor wins by proposing the item on screen).
    """

    sessions: int
    views: int
    mean_length: float  # views per session
    median_length: float
    mean_distinct_items: float  # distinct items per session
    repeat_view_share: float
    same_item_share: float

    def __str__(self) -> str:
        return (
            f"{self.sessions:,} sessions, {self.views:,} views: length mean {self.mean_length:.2f} median"
            f" {self.median_length:g}, distinct items {self.mean_distinct_items:.2f}, next views on a seen"
            f" item {self.repeat_view_share:.3f}, on the same item {self.same_item_share:.3f}"
        )


def session_statistics(
    events: pd.DataFrame, gap_minutes: float = 30.0, min_item_views: int = 5, min_session_views: int = 2
) -> SessionStatistics:
    """Session statistics of the views in `events` (columns visitorid, timestamp, event, itemid).

    The defaults follow the next-item protocol of Ludewig et al. (`ml.nextitem`): items with fewer than
    `min_item_views` views are dropped first, then a gap of more than `gap_minutes` starts a new session, and
    sessions with fewer than `min_session_views` views are dropped. `min_item_views=1, min_session_views=1`
    describes every session as it is.
    """
    views = events.loc[events["event"] == "view", ["visitorid", "timestamp", "itemid"]]
    if min_item_views > 1:
        support = views["itemid"].value_counts()
        views = views.loc[views["itemid"].isin(support.index[support.to_numpy() >= min_item_views])]
    views = views.sort_values(["visitorid", "timestamp"], kind="stable")
    visitor = views["visitorid"].to_numpy(dtype=np.int64)
    item = views["itemid"].to_numpy(dtype=np.int64)
    gap = np.diff(views["timestamp"].to_numpy(dtype=np.int64))
    new = np.r_[True, (visitor[1:] != visitor[:-1]) | (gap > gap_minutes * 60_000)][: len(item)]
    session = np.cumsum(new) - 1
    keep = np.bincount(session)[session] >= min_session_views if len(item) else new
    item, new = item[keep], new[keep]
    session = np.cumsum(new) - 1
    lengths = np.bincount(session)
    n_sessions, n_views = len(lengths), len(item)
    if n_views == n_sessions:  # no next views (or no views at all)
        nan = float("nan")
        length = float(lengths.mean()) if n_sessions else nan
        median = float(np.median(lengths)) if n_sessions else nan
        return SessionStatistics(n_sessions, n_views, length, median, length, nan, nan)
    distinct = len(np.unique(session * (int(item.max()) + 1) + item))
    next_views = n_views - n_sessions
    return SessionStatistics(
        sessions=n_sessions,
        views=n_views,
        mean_length=n_views / n_sessions,
        median_length=float(np.median(lengths)),
        mean_distinct_items=distinct / n_sessions,
        repeat_view_share=(n_views - distinct) / next_views,
        same_item_share=float(((item[1:] == item[:-1]) & ~new[1:]).sum()) / next_views,
    )


# --- the model ------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    category_ids: IntArray  # per category index
    parent_index: IntArray  # -1 for roots
    item_ids: IntArray  # per item index
    item_category: IntArray  # category index per item
    # Items sorted by category, with cumulative weights, for sampling by popularity within a category.
    by_category: IntArray
    cum_weight: FloatArray
    category_lo: IntArray
    category_hi: IntArray
    category_cdf: FloatArray  # categories by total popularity

    def sample_categories(self, rng: np.random.Generator, n: int) -> IntArray:
        return _sample_cdf(self.category_cdf, rng.random(n))

    def sample_items(self, rng: np.random.Generator, categories: IntArray) -> IntArray:
        lo, hi = self.category_lo[categories], self.category_hi[categories]
        before = np.where(lo > 0, self.cum_weight[np.maximum(lo - 1, 0)], 0.0)
        target = before + rng.random(len(categories)) * (self.cum_weight[hi - 1] - before)
        pos = np.clip(np.searchsorted(self.cum_weight, target, side="right"), lo, hi - 1)
        return self.by_category[pos]


@dataclass
class _Events:
    timestamp: IntArray
    visitor: IntArray  # visitor index
    kind: npt.NDArray[np.int8]  # index into EVENT_TYPES
    item: IntArray  # item index
    transaction: IntArray  # -1 unless a transaction


def _concat_events(*parts: _Events) -> _Events:
    return _Events(
        timestamp=np.concatenate([p.timestamp for p in parts]),
        visitor=np.concatenate([p.visitor for p in parts]),
        kind=np.concatenate([p.kind for p in parts]),
        item=np.concatenate([p.item for p in parts]),
        transaction=np.concatenate([p.transaction for p in parts]),
    )


def _sample_cdf(cdf: FloatArray, u: FloatArray) -> IntArray:
    idx = np.searchsorted(cdf, u * cdf[-1], side="right")
    return np.minimum(idx, len(cdf) - 1).astype(np.int64)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> FloatArray:
    return rng.lognormal(np.log(median), sigma, n)


def _group_starts(counts: IntArray) -> IntArray:
    return np.cumsum(counts) - counts


def _build_catalog(rng: np.random.Generator, plan: Plan) -> _Catalog:
    # Category tree, level by level; a parent is drawn with log-normal weights, so some nodes stay leaves.
    sizes = np.array(CATEGORY_LEVEL_SIZES)
    level_start = _group_starts(sizes)
    parent = np.full(sizes.sum(), -1, dtype=np.int64)
    for level in range(1, len(sizes)):
        above = np.arange(level_start[level - 1], level_start[level - 1] + sizes[level - 1])
        weight = rng.lognormal(0.0, 1.0, len(above))
        chosen = _sample_cdf(np.cumsum(weight), rng.random(sizes[level]))
        parent[level_start[level] : level_start[level] + sizes[level]] = above[chosen]
    category_ids = rng.choice(CATEGORY_ID_RANGE, size=len(parent), replace=False).astype(np.int64)
    leaves = np.flatnonzero(np.bincount(parent[parent >= 0], minlength=len(parent)) == 0)

    n = plan.catalog_items
    item_ids = np.sort(rng.choice(max(ITEM_ID_RANGE, n + n // 8), size=n, replace=False)).astype(np.int64)
    rank = rng.permutation(n)
    item_weight = (rank / n + ITEM_ZIPF_OFFSET) ** -ITEM_ZIPF_EXPONENT
    leaf_size = rng.lognormal(0.0, CATEGORY_SIZE_SIGMA, len(leaves))
    item_category = leaves[_sample_cdf(np.cumsum(leaf_size), rng.random(n))]

    by_category = np.argsort(item_category, kind="stable")
    cum_weight = np.cumsum(item_weight[by_category])
    counts = np.bincount(item_category, minlength=len(parent))
    category_hi = np.cumsum(counts)
    category_lo = category_hi - counts
    category_mass = np.zeros(len(parent))
    np.add.at(category_mass, item_category, item_weight)
    return _Catalog(
        category_ids=category_ids,
        parent_index=parent,
        item_ids=item_ids,
        item_category=item_category,
        by_category=by_category,
        cum_weight=cum_weight,
        category_lo=category_lo,
        category_hi=category_hi,
        category_cdf=np.cumsum(category_mass),
    )


def _power_law_counts(rng: np.random.Generator, n: int, total: int, k_max: int) -> IntArray:
    """`n` counts >= 1 summing to exactly `total`, P(k) ~ k^-beta with beta fitted to the mean."""
    if total <= n:
        return np.ones(n, dtype=np.int64)
    k = np.arange(1, k_max + 1, dtype=np.float64)
    lo, hi = 1.01, 8.0
    for _ in range(60):  # bisection on the mean of the truncated power law
        beta = (lo + hi) / 2
        pmf = k**-beta
        if (k * pmf).sum() / pmf.sum() > total / n:
            lo = beta
        else:
            hi = beta
    counts = _sample_cdf(np.cumsum(k**-beta), rng.random(n)) + 1
    diff = total - int(counts.sum())
    if diff > 0:
        counts += rng.multinomial(diff, counts / counts.sum())
    elif diff < 0:  # take the excess from the counts above 1, which keeps every count >= 1
        counts -= rng.multivariate_hypergeometric(counts - 1, -diff)
    return counts


def _follow_copies(source: IntArray) -> IntArray:
    """The original of every index, where `source` points each copy at an earlier index and originals at
    themselves: chains of copies are followed by pointer doubling."""
    while True:
        deeper = source[source]
        if np.array_equal(deeper, source):
            return source
        source = deeper


def _simulate_views(
    rng: np.random.Generator, plan: Plan, cat: _Catalog
) -> tuple[_Events, IntArray, BoolArray]:
    """All views, visitor by visitor and session by session; also each view's session index and bot flag."""
    bots = plan.bots
    bot_views = np.maximum(
        np.rint(plan.views * rng.uniform(0.001, 0.003, bots)).astype(np.int64), min(200, plan.views // 50)
    )
    # The cap keeps one human from dominating a small sample; bots stay the heaviest visitors.
    k_max = min(VISITOR_MAX_VIEWS, max(50, plan.views // 200))
    humans = _power_law_counts(rng, plan.visitors - bots, plan.views - int(bot_views.sum()), k_max)
    counts = np.concatenate([bot_views, humans])  # visitor index < bots is a bot
    n = plan.views
    visitor = np.repeat(np.arange(plan.visitors, dtype=np.int64), counts)
    is_bot = visitor < bots
    first_of_visitor = np.zeros(n, dtype=bool)
    first_of_visitor[_group_starts(counts)] = True

    new_session = first_of_visitor | (rng.random(n) < np.where(is_bot, BOT_NEW_SESSION_P, NEW_SESSION_P))
    session = np.cumsum(new_session) - 1
    session_start_idx = np.flatnonzero(new_session)
    session_visitor = visitor[session_start_idx]
    n_sessions = len(session_start_idx)

    # When: later sessions return within days of the visitor's first visit (wrapping inside the span).
    anchor = rng.random(plan.visitors) * SPAN_DAYS
    later = rng.exponential(RETURN_DAYS_MEAN, n_sessions) * ~first_of_visitor[session_start_idx]
    day = np.floor((anchor[session_visitor] + later) % SPAN_DAYS).astype(np.int64)
    hour = _sample_cdf(np.cumsum(HOURLY_TRAFFIC), rng.random(n_sessions))
    time_of_day = hour * HOUR_MS + rng.integers(0, HOUR_MS, n_sessions)
    bot_session = session_visitor < bots
    time_of_day[bot_session] = rng.integers(0, DAY_MS, int(bot_session.sum()))  # bots ignore the daily cycle

    gap_s = np.where(
        is_bot, _lognormal(rng, BOT_GAP_MEDIAN_S, 0.5, n), _lognormal(rng, GAP_MEDIAN_S, 1.1, n)
    ).clip(1.0, MAX_GAP_S)
    gap_ms = np.rint(gap_s * 1000).astype(np.int64)
    gap_ms[new_session] = 0
    offset = np.cumsum(gap_ms)
    offset -= offset[session_start_idx][session]
    session_end_idx = np.r_[session_start_idx[1:], n] - 1
    duration = offset[session_end_idx]
    start = SPAN_START_MS + day * DAY_MS + time_of_day
    start = np.maximum(np.minimum(start, SPAN_END_MS - END_MARGIN_MS - duration), SPAN_START_MS)
    timestamp = start[session] + offset

    # What: sessions stay in a preferred category; events mostly stay in the session's category.
    prefs = cat.sample_categories(rng, plan.visitors * PREFERRED_CATEGORIES).reshape(-1, PREFERRED_CATEGORIES)
    slot = _sample_cdf(np.cumsum(PREFERENCE_WEIGHTS), rng.random(n_sessions))
    session_category = np.where(
        rng.random(n_sessions) < SESSION_IN_PREFERENCE_P,
        prefs[session_visitor, slot],
        cat.sample_categories(rng, n_sessions),
    )
    category = session_category[session]
    r = rng.random(n)
    in_pref = (r >= EVENT_IN_SESSION_CATEGORY_P) & (r < EVENT_IN_SESSION_CATEGORY_P + EVENT_IN_PREFERENCE_P)
    category[in_pref] = prefs[visitor[in_pref], rng.integers(0, PREFERRED_CATEGORIES, int(in_pref.sum()))]
    anywhere = r >= EVENT_IN_SESSION_CATEGORY_P + EVENT_IN_PREFERENCE_P
    category[anywhere] = cat.sample_categories(rng, int(anywhere.sum()))
    item = cat.sample_items(rng, category)
    item[is_bot] = rng.integers(0, len(cat.item_ids), int(is_bot.sum()))  # crawlers walk the whole catalog
    # Those draws are with replacement, so they often hit an item the session has shown already, most of all
    # in small categories (and so at small scales). Such a draw is drawn again, in the end from another
    # category (the session has seen what it wanted of this one): repeats come only from the choices below.
    for attempt in range(NEW_ITEM_DRAWS):
        _, first = np.unique(session * len(cat.item_ids) + item, return_index=True)
        again = np.ones(n, dtype=bool)
        again[first] = False
        again &= ~is_bot
        if not again.any():
            break
        if attempt >= NEW_ITEM_DRAWS // 2:
            category[again] = cat.sample_categories(rng, int(again.sum()))
        item[again] = cat.sample_items(rng, category[again])
    # A next view may show the item on screen again (a reload, a second look) or go back to an earlier item of
    # the session (comparing); otherwise it is the new item drawn above.
    position = np.arange(n) - session_start_idx[session]
    u = rng.random(n)
    human_next = ~new_session & ~is_bot
    same = human_next & (u < SAME_ITEM_P)
    back = human_next & (position >= 2) & (u >= SAME_ITEM_P) & (u < SAME_ITEM_P + RETURN_VIEW_P)
    source = np.arange(n, dtype=np.int64)
    source[same] -= 1
    back_at = np.flatnonzero(back)
    earlier = (rng.random(len(back_at)) * (position[back_at] - 1)).astype(np.int64)  # not the last one
    source[back_at] = session_start_idx[session[back_at]] + earlier
    item = item[_follow_copies(source)]

    views = _Events(
        timestamp=timestamp,
        visitor=visitor,
        kind=np.zeros(n, dtype=np.int8),
        item=item,
        transaction=np.full(n, -1, dtype=np.int64),
    )
    return views, session, is_bot


def _top_k(keys: FloatArray, k: int) -> IntArray:
    """Indices of the k largest keys, in index order (Efraimidis-Spirakis weighted sampling)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.argpartition(keys, len(keys) - k)[len(keys) - k :]).astype(np.int64)


def _buying_sessions(order: IntArray, capacity: IntArray, wanted: int, purchases: int) -> IntArray:
    """`wanted` sessions, best-ranked first, whose carts can cover `purchases` (one item each at least).

    If the best-ranked ones hold too few carts, the lowest-ranked single-cart sessions give way to the next
    sessions with more carts. Only if that cannot cover it either do extra sessions (extra ids) join.
    """
    wanted = min(wanted, purchases, len(order))
    chosen, rest = order[:wanted], order[wanted:]
    short = purchases - int(capacity[chosen].sum())
    if short > 0:
        gainers = rest[capacity[rest] > 1]
        singles = chosen[capacity[chosen] == 1][::-1]
        swaps = min(
            int(np.searchsorted(np.cumsum(capacity[gainers] - 1), short)) + 1, len(gainers), len(singles)
        )
        chosen = np.concatenate([np.setdiff1d(chosen, singles[:swaps]), gainers[:swaps]])
        rest = np.setdiff1d(rest, gainers[:swaps])
        short = purchases - int(capacity[chosen].sum())
        if short > 0:
            rest = order[np.isin(order, rest)]  # back in rank order
            chosen = np.concatenate(
                [chosen, rest[: int(np.searchsorted(np.cumsum(capacity[rest]), short)) + 1]]
            )
    return chosen


def _simulate_funnel(
    rng: np.random.Generator, plan: Plan, views: _Events, session: IntArray, is_bot: BoolArray
) -> tuple[_Events, _Events]:
    """Add-to-carts sampled from human views, then transactions bought from the carts of one session."""
    propensity = rng.lognormal(0.0, BUY_PROPENSITY_SIGMA, plan.visitors)
    # A shopping mood per session on top of the visitor's propensity: carts cluster in some sessions.
    mood = rng.lognormal(0.0, SESSION_MOOD_SIGMA, int(session[-1]) + 1)
    keys = np.log(rng.random(len(session))) / (propensity[views.visitor] * mood[session])
    keys[is_bot] = -np.inf
    carted = _top_k(keys, plan.addtocarts)  # in view order: visitor, session, time
    cart_time = views.timestamp[carted] + np.rint(
        _lognormal(rng, CART_DELAY_MEDIAN_S, 1.0, len(carted)).clip(1.0, 600.0) * 1000
    ).astype(np.int64)
    carts = _Events(
        timestamp=cart_time,
        visitor=views.visitor[carted],
        kind=np.ones(len(carted), dtype=np.int8),
        item=views.item[carted],
        transaction=np.full(len(carted), -1, dtype=np.int64),
    )
    cart_session = session[carted]

    # Purchases: one transaction per buying session, so the plan's id count comes out exactly. Sessions are
    # drawn by propensity x distinct carted items; each buys one random cart of its own, and the remaining
    # purchases go to random further carts of those sessions. A repeated cart of an item is not bought twice.
    pair = cart_session * (int(carts.item.max(initial=0)) + 1) + carts.item
    eligible = np.sort(np.unique(pair, return_index=True)[1])  # carts in view order, so sessions are runs
    _, run_start, capacity = np.unique(cart_session[eligible], return_index=True, return_counts=True)
    keys = np.log(rng.random(len(capacity))) / (propensity[carts.visitor[eligible[run_start]]] * capacity)
    order = np.argsort(-keys, kind="stable")
    buying = np.zeros(len(capacity), dtype=bool)
    buying[_buying_sessions(order, capacity, plan.transaction_ids, plan.transactions)] = True
    n_buying = int(buying.sum())
    run = np.repeat(np.arange(len(capacity)), capacity)
    candidates = eligible[buying[run]]
    candidate_run = run[buying[run]]
    shuffled = np.lexsort((rng.random(len(candidates)), candidate_run))
    first_of_run = np.r_[True, candidate_run[shuffled][1:] != candidate_run[shuffled][:-1]]
    extra = rng.permutation(candidates[shuffled][~first_of_run])[: plan.transactions - n_buying]
    bought = np.sort(np.concatenate([candidates[shuffled][first_of_run], extra]))
    b_session = cart_session[bought]
    new_group = np.r_[True, b_session[1:] != b_session[:-1]]
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    last_cart = np.maximum.reduceat(cart_time[bought], group_start) if len(bought) else cart_time[:0]
    paid_at = last_cart + np.rint(
        _lognormal(rng, PURCHASE_DELAY_MEDIAN_S, 1.0, len(group_start)).clip(1.0, 900.0) * 1000
    ).astype(np.int64)
    # Transaction ids count up in time, as in the original.
    chronological = np.empty(len(group_start), dtype=np.int64)
    chronological[np.argsort(paid_at, kind="stable")] = np.arange(len(group_start))
    purchases = _Events(
        timestamp=paid_at[group],
        visitor=carts.visitor[bought],
        kind=np.full(len(bought), 2, dtype=np.int8),
        item=carts.item[bought],
        transaction=chronological[group],
    )
    return carts, purchases


@dataclass
class _Properties:
    snapshot: IntArray  # index of the weekly snapshot
    item: IntArray  # item index
    name: IntArray  # index into `names`
    tokens: IntArray  # (rows, 3) numbers of the value's space-separated tokens
    token_kind: npt.NDArray[np.int8]  # (rows, 3): 0 absent, 1 plain ("1338"), 2 numeric ("n12.000")
    names: list[str]


def _snapshot_series(rng: np.random.Generator, rows: IntArray) -> tuple[IntArray, IntArray, BoolArray]:
    """Rows of value histories: (series index, snapshot index, is latest) with increasing snapshots.

    Most series start at the first snapshot. Later rows record changes weeks apart, and rows that would fall
    after the last snapshot are dropped.
    """
    series = np.repeat(np.arange(len(rows), dtype=np.int64), rows)
    first = np.zeros(len(series), dtype=bool)
    first[_group_starts(rows)] = True
    start = np.where(rng.random(len(rows)) < 0.75, 0, rng.integers(0, SNAPSHOTS, len(rows)))
    step = np.where(first, start[series], rng.geometric(0.35, len(series)))
    total = np.cumsum(step)
    snapshot = total - (total - step)[first][series]
    keep = snapshot < SNAPSHOTS
    series, snapshot = series[keep], snapshot[keep]
    is_last = np.r_[series[1:] != series[:-1], True]
    return series, snapshot, is_last


def _one_token(values: IntArray, kind: int) -> tuple[IntArray, npt.NDArray[np.int8]]:
    tokens = np.zeros((len(values), 3), dtype=np.int64)
    tokens[:, 0] = values
    kinds = np.zeros((len(values), 3), dtype=np.int8)
    kinds[:, 0] = kind
    return tokens, kinds


def _simulate_properties(rng: np.random.Generator, cat: _Catalog) -> _Properties:
    n_items = len(cat.item_ids)
    names = ["categoryid", "available", "790"]
    parts: list[tuple[IntArray, IntArray, int | IntArray, IntArray, npt.NDArray[np.int8]]] = []

    # categoryid: the latest snapshot is the category that drives the item's views; older ones may differ.
    item, snap, last = _snapshot_series(rng, 1 + (rng.random(n_items) < 0.3) + (rng.random(n_items) < 0.08))
    value = cat.category_ids[cat.item_category[item]]
    moved = ~last & (rng.random(len(item)) < 0.2)
    value[moved] = cat.category_ids[cat.sample_categories(rng, int(moved.sum()))]
    parts.append((item, snap, 0, *_one_token(value, 1)))

    # available: a history of changes, so consecutive rows alternate and end at the current state.
    item, snap, last = _snapshot_series(rng, np.minimum(rng.geometric(0.4, n_items), 6))
    rows_after = np.flatnonzero(last)[np.cumsum(np.r_[0, last[:-1]])] - np.arange(len(item))
    current = rng.random(n_items) < 0.6
    parts.append((item, snap, 1, *_one_token((current[item] ^ (rows_after % 2 == 1)).astype(np.int64), 1)))

    # 790 looks like a price: "n277200.000", a multiple of 120 that changes a little over time.
    item, snap, last = _snapshot_series(rng, 1 + (rng.random(n_items) < 0.3))
    base = _lognormal(rng, 30_000.0, 1.0, n_items)[item]
    price = np.where(last, base, base * rng.uniform(0.8, 1.2, len(item)))
    parts.append((item, snap, 2, *_one_token(np.maximum(1, np.rint(price / 120)).astype(np.int64) * 120, 2)))

    # Hashed properties: a Zipf-popular subset per item, each value a few hashed tokens.
    pool = rng.choice(np.setdiff1d(np.arange(HASHED_PROPERTIES + 5), [790]), HASHED_PROPERTIES, replace=False)
    names.extend(str(p) for p in pool)
    per_item = rng.poisson(HASHED_PER_ITEM, n_items)
    owner = np.repeat(np.arange(n_items, dtype=np.int64), per_item)
    prop = _sample_cdf(np.cumsum(np.arange(1, HASHED_PROPERTIES + 1) ** -1.1), rng.random(len(owner)))
    pair = np.unique(owner * HASHED_PROPERTIES + prop)  # an item has each property once
    owner, prop = pair // HASHED_PROPERTIES, pair % HASHED_PROPERTIES
    series, snap, _ = _snapshot_series(rng, 1 + (rng.random(len(owner)) < 0.1))
    n = len(series)
    n_tokens = 1 + rng.binomial(2, 0.35, n)
    kinds = np.where(rng.random((n, 3)) < 0.3, 2, 1).astype(np.int8)
    kinds[np.arange(3)[None, :] >= n_tokens[:, None]] = 0
    hashed = (HASHED_TOKEN_RANGE * rng.random((n, 3)) ** 3).astype(np.int64)  # skewed: common words recur
    numbers = np.rint(_lognormal(rng, 12.0, 1.5, 3 * n).reshape(n, 3)).astype(np.int64)
    parts.append((owner[series], snap, 3 + prop[series], np.where(kinds == 2, numbers, hashed), kinds))

    return _Properties(
        item=np.concatenate([p[0] for p in parts]),
        snapshot=np.concatenate([p[1] for p in parts]),
        name=np.concatenate([np.broadcast_to(np.asarray(p[2], dtype=np.int64), p[0].shape) for p in parts]),
        tokens=np.concatenate([p[3] for p in parts]),
        token_kind=np.concatenate([p[4] for p in parts]),
        names=names,
    )


# --- writing --------------------------------------------------------------------------------------------
# Rows are built as byte matrices: each field is a fixed-width block padded with NUL bytes, and the NULs are
# dropped when writing. This is about 10x faster than pandas.to_csv and needs no per-row Python.


def _digits(values: IntArray) -> ByteMatrix:
    """ASCII digits of non-negative ints, right-aligned and NUL-padded."""
    width = len(str(int(values.max(initial=0))))
    power = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = (values[:, None] // power % 10 + 48).astype(np.uint8)
    out[values[:, None] < power] = 0
    out[:, -1] = values % 10 + 48  # a zero still prints "0"
    return out


def _blank(digits: ByteMatrix, empty: BoolArray) -> ByteMatrix:
    digits[empty] = 0
    return digits


def _column(byte: str, n: int) -> ByteMatrix:
    return np.full((n, 1), ord(byte), dtype=np.uint8)


def _text_table(words: list[str] | tuple[str, ...]) -> ByteMatrix:
    table = np.zeros((len(words), max(len(w) for w in words)), dtype=np.uint8)
    for i, word in enumerate(words):
        table[i, : len(word)] = np.frombuffer(word.encode("ascii"), dtype=np.uint8)
    return table


def _value_tokens(tokens: IntArray, kinds: npt.NDArray[np.int8]) -> ByteMatrix:
    n = len(tokens)
    blocks: list[ByteMatrix] = []
    suffix = np.frombuffer(b".000", dtype=np.uint8)
    for j in range(tokens.shape[1]):
        present, numeric = kinds[:, j] > 0, kinds[:, j] == 2
        if j:
            blocks.append(_column(" ", n) * present[:, None])
        blocks.append(_column("n", n) * numeric[:, None])
        blocks.append(_blank(_digits(tokens[:, j]), ~present))
        blocks.append(suffix[None, :] * numeric[:, None].astype(np.uint8))
    return np.concatenate(blocks, axis=1)


def _write_rows(
    path: Path,
    header: tuple[str, ...],
    n_rows: int,
    build: Callable[[slice], list[ByteMatrix]],
    bar: tqdm[Any],
) -> int:
    """Write the header and `build`'s byte matrices chunk by chunk (atomically); returns the file size."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write((",".join(header) + "\n").encode())
        for lo in range(0, n_rows, WRITE_CHUNK_ROWS):
            rows = slice(lo, min(lo + WRITE_CHUNK_ROWS, n_rows))
            fields = build(rows)
            n = rows.stop - rows.start
            blocks: list[ByteMatrix] = []
            for i, block in enumerate(fields):
                blocks.extend([block, _column("," if i < len(fields) - 1 else "\n", n)])
            flat = np.concatenate(blocks, axis=1).reshape(-1)
            f.write(flat[flat != 0].tobytes())
            bar.update(n)
    os.replace(tmp, path)
    return path.stat().st_size


# --- entry point ----------------------------------------------------------------------------------------

MARKER_FILE = ".generated.json"  # lets a re-run overwrite generated files, but never a real download
OUTPUT_FILES = (EVENTS_FILE, CATEGORY_TREE_FILE, *ITEM_PROPERTIES_FILES)


def _check_overwrite(out_dir: Path, overwrite: bool) -> None:
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing and not overwrite and not (out_dir / MARKER_FILE).exists():
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(existing)}, not written by the generator (the real"
            " download?), so nothing was written: choose another output folder (`clickstream generate --out"
            " DIR`); replacing them takes `--overwrite` (overwrite=True), which deletes those files"
        )


def _stage(progress: bool, message: str) -> None:
    if progress:
        tqdm.write(f"generator: {message}", file=sys.stderr)


def _write_events(
    path: Path, plan: Plan, cat: _Catalog, events: _Events, rng: np.random.Generator, bar: tqdm[Any]
) -> int:
    # Visitor ids are dense 0..visitors-1 as published, shuffled so that an id says nothing about activity.
    visitor_ids = rng.permutation(plan.visitors).astype(np.int64)
    order = rng.permutation(len(events.timestamp))  # the original is not sorted by time either
    words = _text_table(EVENT_TYPES)

    def fields(part: slice) -> list[ByteMatrix]:
        idx = order[part]
        tid = events.transaction[idx]
        return [
            _digits(events.timestamp[idx]),
            _digits(visitor_ids[events.visitor[idx]]),
            words[events.kind[idx]],
            _digits(cat.item_ids[events.item[idx]]),
            _blank(_digits(np.maximum(tid, 0)), tid < 0),
        ]

    return _write_rows(path, EVENTS_HEADER, len(order), fields, bar)


def _write_properties(
    out_dir: Path, cat: _Catalog, props: _Properties, rng: np.random.Generator, bar: tqdm[Any]
) -> dict[str, tuple[int, int]]:
    """Shuffled rows split over part1 and part2 in the original ratio: {file name: (rows, bytes)}."""
    order = rng.permutation(len(props.item))
    words = _text_table(props.names)
    n_part1 = round(len(order) * PART1_SHARE)
    written: dict[str, tuple[int, int]] = {}
    for name, part_order in zip(ITEM_PROPERTIES_FILES, (order[:n_part1], order[n_part1:]), strict=True):

        def fields(part: slice, part_order: IntArray = part_order) -> list[ByteMatrix]:
            idx = part_order[part]
            return [
                _digits(FIRST_SNAPSHOT_MS + props.snapshot[idx] * WEEK_MS),
                _digits(cat.item_ids[props.item[idx]]),
                words[props.name[idx]],
                _value_tokens(props.tokens[idx], props.token_kind[idx]),
            ]

        size = _write_rows(out_dir / name, ITEM_PROPERTIES_HEADER, len(part_order), fields, bar)
        written[name] = (len(part_order), size)
    return written


def _write_category_tree(path: Path, cat: _Catalog, rng: np.random.Generator) -> tuple[int, int]:
    parent_ids = np.where(cat.parent_index >= 0, cat.category_ids[cat.parent_index], -1)
    lines = [
        f"{cat.category_ids[i]},{parent_ids[i] if parent_ids[i] >= 0 else ''}\n"
        for i in rng.permutation(len(cat.category_ids))
    ]
    path.write_text(",".join(CATEGORY_TREE_HEADER) + "\n" + "".join(lines))
    return len(lines), path.stat().st_size


def generate(
    out_dir: str | Path, scale: Scale, seed: int, progress: bool = False, *, overwrite: bool = False
) -> GenerationSummary:
    """Write the four RetailRocket files for `scale` into `out_dir`; the same seed gives identical bytes.

    Raises FileExistsError rather than replace files that the generator did not write, unless `overwrite`.
    """
    started = time.perf_counter()
    plan = Plan.for_scale(scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_overwrite(out_dir, overwrite)
    # Independent streams per stage: tuning one stage does not reshuffle the others.
    catalog_rng, views_rng, funnel_rng, props_rng, order_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )

    _stage(progress, f"simulating {plan.events:,} events")
    cat = _build_catalog(catalog_rng, plan)
    views, session, is_bot = _simulate_views(views_rng, plan, cat)
    carts, purchases = _simulate_funnel(funnel_rng, plan, views, session, is_bot)
    events = _concat_events(views, carts, purchases)
    del views, carts, purchases, session, is_bot
    _stage(progress, "simulating item properties")
    props = _simulate_properties(props_rng, cat)

    written: dict[str, tuple[int, int]] = {}  # file name: (rows, bytes)
    total = len(events.timestamp) + len(props.item)
    with tqdm(
        total=total, unit="row", unit_scale=True, desc="writing", file=sys.stderr, disable=not progress
    ) as bar:
        size = _write_events(out_dir / EVENTS_FILE, plan, cat, events, order_rng, bar)
        written[EVENTS_FILE] = (len(events.timestamp), size)
        written.update(_write_properties(out_dir, cat, props, order_rng, bar))
    written[CATEGORY_TREE_FILE] = _write_category_tree(out_dir / CATEGORY_TREE_FILE, cat, order_rng)
    (out_dir / MARKER_FILE).write_text(json.dumps({"seed": seed, "plan": asdict(plan)}, indent=2) + "\n")

    kind_counts = np.bincount(events.kind, minlength=len(EVENT_TYPES))
    seconds = time.perf_counter() - started
    _stage(progress, f"done in {seconds:.1f} s")
    return GenerationSummary(
        out_dir=out_dir,
        seed=seed,
        events=len(events.timestamp),
        views=int(kind_counts[0]),
        addtocarts=int(kind_counts[1]),
        transactions=int(kind_counts[2]),
        transaction_ids=int(events.transaction.max(initial=-1)) + 1,
        visitors=len(np.unique(events.visitor)),
        items_in_events=len(np.unique(events.item)),
        catalog_items=len(cat.item_ids),
        categories=len(cat.category_ids),
        root_categories=int((cat.parent_index < 0).sum()),
        property_rows=len(props.item),
        file_rows={name: written[name][0] for name in OUTPUT_FILES},
        file_bytes={name: written[name][1] for name in OUTPUT_FILES},
        seconds=seconds,
    )
