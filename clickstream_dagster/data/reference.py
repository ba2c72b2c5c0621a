"""Reference data into PostgreSQL: the category tree and the item property snapshots from the RetailRocket CSVs,
and each item's current state derived from them. Each load replaces its table in the caller's transaction
(idempotent); every rejected CSV row goes to the quarantine with its file, line and reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    ITEM_PROPERTIES_FILES,
    Chunk,
    iter_category_tree,
    iter_item_properties,
)
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.copy import copy_rows


@dataclass(frozen=True)
class Loaded:
    """One reference table after a load: what was read, and what the table holds now."""

    rows_read: int
    rows_quarantined: int
    rows: int  # in the table
    distinct: int  # category_tree: its roots; item_properties: its items
    sources: list[Path]


@dataclass(frozen=True)
class ItemsSummary:
    items: int
    with_category: int
    available: int
    with_category_path: int
    max_depth: int
    preview: list[tuple[object, ...]]  # itemid, categoryid, available, category_path


def require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: download the RetailRocket dataset into that folder, "
            "or run `clickstream generate --out data/raw` for generated data"
        )
    return path


def load_category_tree(conn: psycopg.Connection, raw_dir: Path) -> Loaded:
    path = require(raw_dir / CATEGORY_TREE_FILE)
    conn.execute(q.TRUNCATE_CATEGORY_TREE)
    _forget_old_rejects(conn, [path])
    loaded, rejected = _copy_chunks(
        conn, q.COPY_CATEGORY_TREE, q.CATEGORY_TREE_TYPES, iter_category_tree(path)
    )
    row = conn.execute(q.CATEGORY_TREE_SUMMARY).fetchone()
    total, roots = row if row else (0, 0)
    return Loaded(loaded + rejected, rejected, int(total), int(roots), [path])


def load_item_properties(
    conn: psycopg.Connection, raw_dir: Path, progress: Callable[[Chunk, int], None] | None = None
) -> Loaded:
    """Both snapshot files, streamed in chunks; `progress(chunk, rows read so far)` after each chunk."""
    paths = [require(raw_dir / name) for name in ITEM_PROPERTIES_FILES]
    conn.execute(q.TRUNCATE_ITEM_PROPERTIES)
    _forget_old_rejects(conn, paths)
    loaded, rejected = _copy_chunks(
        conn,
        q.COPY_ITEM_PROPERTIES,
        q.ITEM_PROPERTIES_TYPES,
        _reported(iter_item_properties(paths), progress),
    )
    row = conn.execute(q.ITEM_PROPERTIES_SUMMARY).fetchone()
    total, n_items = row if row else (0, 0)
    return Loaded(loaded + rejected, rejected, int(total), int(n_items), paths)


def rebuild_items(conn: psycopg.Connection) -> ItemsSummary:
    """Each item's current category and availability (its latest snapshots) and its category path."""
    conn.execute(q.TRUNCATE_ITEMS)
    conn.execute(q.REBUILD_ITEMS)
    summary = conn.execute(q.ITEMS_SUMMARY).fetchone()
    preview = conn.execute(q.ITEMS_PREVIEW).fetchall()
    total, with_category, available, with_path, depth = summary if summary else (0, 0, 0, 0, 0)
    return ItemsSummary(
        int(total), int(with_category), int(available), int(with_path), int(depth or 0), list(preview)
    )


def _reported(chunks: Iterator[Chunk], progress: Callable[[Chunk, int], None] | None) -> Iterator[Chunk]:
    seen = 0
    for chunk in chunks:
        seen += chunk.rows_read
        if progress is not None:
            progress(chunk, seen)
        yield chunk


def _copy_chunks(
    conn: psycopg.Connection, copy_sql: str, types: tuple[str, ...], chunks: Iterable[Chunk]
) -> tuple[int, int]:
    """COPY every valid row, quarantine every rejected one with file and line; returns (loaded, rejected)."""
    loaded = rejected = 0
    with conn.cursor() as cur:
        for chunk in chunks:
            frame = chunk.frame
            if frame.isna().to_numpy().any():  # nullable columns (parentid): pd.NA -> SQL NULL
                frame = frame.astype(object).where(frame.notna(), None)
            copy_rows(cur, copy_sql, types, frame.itertuples(index=False, name=None))
            loaded += len(chunk.frame)
            for bad in chunk.rejected:
                cur.execute(q.QUARANTINE_CSV_ROW, (bad.file, bad.line, bad.raw.encode(), bad.reason))
            rejected += len(chunk.rejected)
    return loaded, rejected


def _forget_old_rejects(conn: psycopg.Connection, files: Iterable[Path]) -> None:
    for f in files:
        conn.execute(q.FORGET_CSV_QUARANTINE, (str(f),))
