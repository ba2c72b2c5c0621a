"""The serving tables the API reads, written from the promoted model: recommendations (top-N per recently
active visitor, never an item they bought), similar_items (nearest items by embedding cosine) and
popular_items (the fallback lists). `ml.serving` computes the rows; this module writes them.

A version's rows are written beside the served version's, and older versions are pruned (`write_serving_rows`).
Write popular_items last: its rows tell readers that the version is complete, and the API switches then.
The `publish_*` functions read in one transaction and write in another, so no connection is held while
rows are computed; `connection` is a factory of pooled connections, each block one transaction.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from psycopg.rows import scalar_row

from clickstream_dagster.ml.models import LightFMRecommender
from clickstream_dagster.ml.prep import DAY_MS
from clickstream_dagster.ml.registry import RegistryError, load_promoted, promoted_model
from clickstream_dagster.ml.serving import popular_items as popular_rows
from clickstream_dagster.ml.serving import recommendations_for_visitors
from clickstream_dagster.ml.serving import similar_items as similar_rows
from clickstream_dagster.ml.source import newest_event_ms
from clickstream_dagster.sql import ml as q
from clickstream_dagster.sql.copy import copy_frame

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class ServingTable:
    prune: str
    copy: str
    types: tuple[str, ...]  # COPY types, model_version last
    columns: tuple[str, ...]  # frame columns, without model_version


SERVING_TABLES: dict[str, ServingTable] = {
    "recommendations": ServingTable(
        q.PRUNE_RECOMMENDATIONS,
        q.COPY_RECOMMENDATIONS,
        q.RECOMMENDATION_TYPES,
        ("visitorid", "rank", "itemid", "score"),
    ),
    "similar_items": ServingTable(
        q.PRUNE_SIMILAR_ITEMS,
        q.COPY_SIMILAR_ITEMS,
        q.SIMILAR_ITEM_TYPES,
        ("itemid", "rank", "similar_itemid", "score"),
    ),
    "popular_items": ServingTable(
        q.PRUNE_POPULAR_ITEMS,
        q.COPY_POPULAR_ITEMS,
        q.POPULAR_ITEM_TYPES,
        ("list", "rank", "itemid", "score", "visitors", "recent_events", "earlier_events", "trend"),
    ),
}


def write_serving_rows(conn: psycopg.Connection, table: str, frame: pd.DataFrame, version: int) -> None:
    """`version`'s rows of one serving table, beside the served version's (older versions are pruned).
    Write popular_items last: its rows tell readers that the version is complete."""
    spec = SERVING_TABLES[table]
    with conn.cursor() as cur:
        cur.execute(spec.prune, {"version": version})
        copy_frame(
            cur, spec.copy, spec.types, frame.assign(model_version=version), (*spec.columns, "model_version")
        )


@dataclass(frozen=True)
class RecommendationsWritten:
    version: int
    rows: pd.DataFrame  # visitorid, rank, itemid, score
    active_visitors: int  # with an event in the active window (at most max_visitors)
    known_visitors: int  # of those, the ones the model knows: the ones recommended to
    rows_written: int
    visitors_written: int
    seconds: float  # ranking time


def publish_recommendations(
    connection: Connect, top_n: int, active_days: float, max_visitors: int
) -> RecommendationsWritten:
    """Top `top_n` items from the promoted model for each visitor with an event in the last `active_days` of
    event time (the `max_visitors` most recently active), never an item they ever bought."""
    with connection() as conn:
        version, bundle = load_promoted(conn)
        since = newest_event_ms(conn) - int(active_days * DAY_MS)
        with conn.cursor(row_factory=scalar_row) as cur:
            active = cur.execute(q.ACTIVE_VISITORS, (since, max_visitors)).fetchall()
        known = np.intersect1d(np.asarray(active, dtype=np.int64), bundle.user_ids)
        bought: dict[int, set[int]] = defaultdict(set)
        for visitor, item in conn.execute(q.PURCHASES_OF_VISITORS, (known.tolist(),)).fetchall():
            bought[int(visitor)].add(int(item))
    started = time.perf_counter()
    rows = recommendations_for_visitors(bundle.model, known, top_n, exclude=bought)
    seconds = time.perf_counter() - started
    with connection() as conn:
        write_serving_rows(conn, "recommendations", rows, version)
        total, visitors = conn.execute(q.RECOMMENDATIONS_SUMMARY, (version,)).fetchone() or (0, 0)
    return RecommendationsWritten(version, rows, len(active), len(known), total, visitors, seconds)


@dataclass(frozen=True)
class SimilarItemsWritten:
    version: int
    rows_written: int
    items_written: int
    rows: int  # computed
    seconds: float


def publish_similar_items(connection: Connect, k: int = 20) -> SimilarItemsWritten:
    """For every item of the promoted model (LightFM only), its `k` nearest items by cosine of the item
    embeddings."""
    with connection() as conn:
        version, bundle = load_promoted(conn)
    model = bundle.model
    if not isinstance(model, LightFMRecommender):
        raise RegistryError(f"promoted model v{version} is a {type(model).__name__}, not LightFM")
    started = time.perf_counter()
    rows = similar_rows(model, k=k)
    seconds = time.perf_counter() - started
    with connection() as conn:
        write_serving_rows(conn, "similar_items", rows, version)
        total, items = conn.execute(q.SIMILAR_ITEMS_SUMMARY, (version,)).fetchone() or (0, 0)
    return SimilarItemsWritten(version, total, items, len(rows), seconds)


@dataclass(frozen=True)
class PopularItemsWritten:
    version: int  # the promoted model's (0 when none is promoted)
    rows: pd.DataFrame  # list, rank, itemid, score, visitors, recent_events, earlier_events, trend
    lists: dict[str, int]  # rows written per list


def publish_popular_items(connection: Connect, events: pd.DataFrame, n: int = 100) -> PopularItemsWritten:
    """The `popular` and `trending` lists (`n` items each) from cleaned `events`, under the promoted model's
    version: written last, they mark that version's serving rows complete."""
    rows = popular_rows(events, n=n)
    with connection() as conn:
        promoted = promoted_model(conn)
        version = promoted.version if promoted is not None else 0
        write_serving_rows(conn, "popular_items", rows, version)
        lists: dict[str, int] = dict(conn.execute(q.POPULAR_ITEMS_SUMMARY, (version,)).fetchall())
    return PopularItemsWritten(version, rows, lists)
