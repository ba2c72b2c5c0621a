"""The serving tables the API reads, written from the promoted model of any type: recommendations (top-N for
every visitor the model knows, never an item they bought), similar_items (each item's nearest items) and
popular_items (the fallback lists). `ml.ranking` computes the rows; this module writes them.

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

from clickstream_dagster.ml.ranking import popular_items as popular_rows
from clickstream_dagster.ml.ranking import similar_items as similar_rows
from clickstream_dagster.ml.registry import load_served, served_version
from clickstream_dagster.sql import ml as q
from clickstream_dagster.sql.copy import copy_frame

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class ServingTable:
    prune: str
    copy: str
    types: tuple[str, ...]  # COPY types, model_version last
    columns: tuple[str, ...]  # frame columns, without model_version


SIMILAR_COLUMNS = ("itemid", "rank", "similar_itemid", "score")
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
        SIMILAR_COLUMNS,
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
    preview: pd.DataFrame  # the first visitors' rows: visitorid, rank, itemid, score
    known_visitors: int  # every visitor the model knows: each gets a list
    rows_written: int
    visitors_written: int
    seconds: float  # ranking and writing


def publish_recommendations(connection: Connect, top_n: int) -> RecommendationsWritten:
    """Top `top_n` items from the promoted model for every visitor it knows, never an item they ever bought
    (in its training data or since: the purchases are read from the events). Ranked and written in batches,
    in one transaction, so memory stays bounded at any number of visitors."""
    with connection() as conn:
        version, bundle = load_served(conn)
        known = np.asarray(bundle.user_ids if bundle is not None else [], dtype=np.int64)
        bought: dict[int, set[int]] = defaultdict(set)
        for visitor, item in conn.execute(q.PURCHASES_OF_VISITORS, (known.tolist(),)).fetchall():
            bought[int(visitor)].add(int(item))
    started = time.perf_counter()
    preview = pd.DataFrame(columns=["visitorid", "rank", "itemid", "score"])
    spec = SERVING_TABLES["recommendations"]
    # Popularity (no model promoted) has no per-visitor lists: the version's rows are none.
    lists = bundle.model.iter_recommendations(known, top_n, exclude=bought) if bundle is not None else ()
    with connection() as conn, conn.cursor() as cur:
        cur.execute(spec.prune, {"version": version})
        for k, rows in enumerate(lists):
            if k == 0:
                preview = rows.head(10)
            columns = (*spec.columns, "model_version")
            copy_frame(cur, spec.copy, spec.types, rows.assign(model_version=version), columns)
        total, visitors = cur.execute(q.RECOMMENDATIONS_SUMMARY, (version,)).fetchone() or (0, 0)
    return RecommendationsWritten(
        version, preview, len(known), total, visitors, time.perf_counter() - started
    )


@dataclass(frozen=True)
class SimilarItemsWritten:
    version: int
    rows_written: int
    items_written: int
    rows: int  # computed
    seconds: float


def publish_similar_items(connection: Connect, k: int = 20) -> SimilarItemsWritten:
    """For every item of the promoted model, its `k` nearest items: by cosine of the item embeddings
    (LightFM), the model's own neighbours (item-based CF), or the item neighbourhood its bundle holds."""
    with connection() as conn:
        version, bundle = load_served(conn)
    started = time.perf_counter()
    # Popularity (no model promoted) knows no item neighbourhood: the version's rows are none.
    rows = similar_rows(bundle, k=k) if bundle is not None else pd.DataFrame(columns=list(SIMILAR_COLUMNS))
    seconds = time.perf_counter() - started
    with connection() as conn:
        write_serving_rows(conn, "similar_items", rows, version)
        total, items = conn.execute(q.SIMILAR_ITEMS_SUMMARY, (version,)).fetchone() or (0, 0)
    return SimilarItemsWritten(version, total, items, len(rows), seconds)


@dataclass(frozen=True)
class PopularItemsWritten:
    version: int  # the promoted model's (POPULARITY_VERSION, 0, when none is promoted)
    rows: pd.DataFrame  # list, rank, itemid, score, visitors, recent_events, earlier_events, trend
    lists: dict[str, int]  # rows written per list


def publish_popular_items(connection: Connect, events: pd.DataFrame, n: int = 100) -> PopularItemsWritten:
    """The `popular` and `trending` lists (`n` items each) from cleaned `events`, under the promoted model's
    version: written last, they mark that version's serving rows complete."""
    rows = popular_rows(events, n=n)
    with connection() as conn:
        version = served_version(conn)
        write_serving_rows(conn, "popular_items", rows, version)
        lists: dict[str, int] = dict(conn.execute(q.POPULAR_ITEMS_SUMMARY, (version,)).fetchall())
    return PopularItemsWritten(version, rows, lists)
