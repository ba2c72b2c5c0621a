"""The promoted model's answers, held in the API process as compact arrays (no Python object per row).

`load_answers(conn, version)` reads one model version's serving rows with binary COPY (decoded by numpy,
`sql.copy.read_arrays`) into a `ModelAnswers`:

- recommendations: every known visitor's stored list, best first: the sorted visitor ids, where each one's
  rows start, and the items and scores of all rows one after another (12 bytes a row, plus 16 a visitor);
- similar_items: the same layout by item;
- the fallback: the popular list topped up from trending, without repeats.

A `ModelAnswers` never changes once built. The store swaps the whole object when another version is
served, so a request that took one reference answers from one model only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from clickstream_dagster.sql import api as q
from clickstream_dagster.sql.copy import read_arrays

# The load runs in a worker thread beside the API's event loop: it hands the GIL over after every
# millisecond of reading, for as long (sql.copy.read_arrays), so requests keep being answered while a model
# loads.
SHARE_GIL_S = 0.001

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Lists:
    """Ranked lists keyed by id: `keys` sorted, list i is rows starts[i]:starts[i + 1]."""

    keys: Ids
    starts: Ids
    items: Ids
    scores: Scores

    @classmethod
    def from_rows(cls, keys: Ids, items: Ids, scores: Scores) -> Lists:
        """From rows sorted by key, then rank. Takes `items` and `scores` as they are when their types
        match (no copy); the per-row `keys` are not kept (only one per list), and the temporaries are a
        byte per row."""
        n = len(keys)
        if n and (keys[1:] < keys[:-1]).any():
            raise ValueError("rows must be sorted by key")
        boundaries = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        starts = np.concatenate(([0], boundaries, [n])).astype(np.int64) if n else np.zeros(1, np.int64)
        return cls(
            keys[starts[:-1]].astype(np.int64),
            starts,
            items.astype(np.int64, copy=False),
            scores.astype(np.float32, copy=False),
        )

    def get(self, key: int, limit: int | None = None) -> list[tuple[int, float]]:
        """The list of `key` (empty when unknown), best first, at most `limit` rows."""
        i = int(np.searchsorted(self.keys, key))
        if i == len(self.keys) or int(self.keys[i]) != key:
            return []
        lo, hi = int(self.starts[i]), int(self.starts[i + 1])
        if limit is not None:
            hi = min(hi, lo + limit)
        return list(zip(self.items[lo:hi].tolist(), self.scores[lo:hi].tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def rows(self) -> int:
        return len(self.items)

    @property
    def depth(self) -> int:
        """The longest list."""
        return int(np.diff(self.starts).max()) if len(self.keys) else 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.starts.nbytes + self.items.nbytes + self.scores.nbytes


@dataclass(frozen=True)
class ModelAnswers:
    version: int  # of the serving tables; q.POPULARITY_VERSION: no model, the popular lists only
    recommendations: Lists  # by visitor
    similar: Lists  # by item
    fallback: Sequence[tuple[int, float]]  # popular, then trending, each item once
    ready_at: datetime | None = None  # when the version's rows were completed (popular_items.computed_at)

    @property
    def model_version(self) -> int | None:
        """The promoted model that answers, None while none is (the popular lists answer)."""
        return None if self.version == q.POPULARITY_VERSION else self.version

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return self.recommendations.nbytes + self.similar.nbytes


def _copy(query: str, version: int) -> sql.Composed:
    # COPY takes no bind parameters: the version (an integer) goes in as a literal.
    return sql.SQL(query).format(version=sql.Literal(int(version)))


def load_answers(conn: psycopg.Connection, version: int) -> ModelAnswers:
    """One model version's serving rows from PostgreSQL, in one repeatable-read snapshot (so `conn` must not
    be inside a transaction already)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError(
            "load_answers needs a connection outside any transaction (commit or roll back first)"
        )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Each table's lists built as soon as it is read: its per-row keys are freed before the next.
        recommendations = Lists.from_rows(
            *read_arrays(
                cur,
                _copy(q.RECOMMENDATION_ROWS, version).as_string(conn),
                ("int8", "int8", "float4"),
                share_gil_s=SHARE_GIL_S,
            )
        )
        similar = Lists.from_rows(
            *read_arrays(
                cur,
                _copy(q.SIMILAR_ITEM_ROWS, version).as_string(conn),
                ("int8", "int8", "float4"),
                share_gil_s=SHARE_GIL_S,
            )
        )
        merged: dict[int, float] = {}
        for _list, item, score in cur.execute(q.POPULAR_ITEMS, (version,)).fetchall():
            merged.setdefault(int(item), float(score))
        row = cur.execute(q.VERSION_READY_AT, (version,)).fetchone()
    return ModelAnswers(version, recommendations, similar, tuple(merged.items()), row[0] if row else None)
