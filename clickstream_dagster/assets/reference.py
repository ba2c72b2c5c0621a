"""Reference data: the category tree and item property snapshots from the RetailRocket CSVs, and each item's
current state derived from them. Each materialization replaces the table in one transaction (idempotent)."""

from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    ITEM_PROPERTIES_FILES,
    Chunk,
    iter_category_tree,
    iter_item_properties,
)
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.sql import queries as q

CATEGORY_TREE = dg.AssetKey("category_tree")
ITEM_PROPERTIES = dg.AssetKey("item_properties")
ITEMS = dg.AssetKey("items")
GROUP = "reference"


class RawFilesConfig(dg.Config):
    raw_dir: str = Field(default="data/raw", description="Folder with the RetailRocket CSV files")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: download the RetailRocket dataset into that folder, "
            "or run `clickstream generate --out data/raw` for generated data"
        )
    return path


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
            with cur.copy(copy_sql) as copy:
                copy.set_types(types)
                for row in frame.itertuples(index=False, name=None):
                    copy.write_row(row)
            loaded += len(chunk.frame)
            for bad in chunk.rejected:
                cur.execute(q.QUARANTINE_CSV_ROW, (bad.file, bad.line, bad.raw.encode(), bad.reason))
            rejected += len(chunk.rejected)
    return loaded, rejected


def _forget_old_rejects(conn: psycopg.Connection, files: Iterable[Path]) -> None:
    for f in files:
        conn.execute(q.FORGET_CSV_QUARANTINE, (str(f),))


@dg.asset(
    key=CATEGORY_TREE,
    group_name=GROUP,
    kinds={"postgres"},
    description="category_tree.csv: each category and its parent (empty for the 25 roots).",
)
def category_tree(
    context: dg.AssetExecutionContext, config: RawFilesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    path = _require(Path(config.raw_dir) / CATEGORY_TREE_FILE)
    with postgres.connection() as conn:
        conn.execute(q.TRUNCATE_CATEGORY_TREE)
        _forget_old_rejects(conn, [path])
        loaded, rejected = _copy_chunks(
            conn, q.COPY_CATEGORY_TREE, q.CATEGORY_TREE_TYPES, iter_category_tree(path)
        )
        row = conn.execute(q.CATEGORY_TREE_SUMMARY).fetchone()
    total, roots = row if row else (0, 0)
    context.log.info(f"{path}: read {loaded + rejected:,} = loaded {loaded:,} + quarantined {rejected:,}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "roots": roots,
            "rows_read": loaded + rejected,
            "rows_quarantined": rejected,
            "source": str(path),
        }
    )


def _progress(context: dg.AssetExecutionContext, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    seen = 0
    for chunk in chunks:
        seen += chunk.rows_read
        context.log.info(f"{chunk.file.name}: {seen:,} rows read (line {chunk.last_line:,})")
        yield chunk


@dg.asset(
    key=ITEM_PROPERTIES,
    group_name=GROUP,
    kinds={"postgres"},
    description="item_properties_part1/2.csv: timestamped snapshots of item properties (categoryid, available, "
    "hashed others), streamed and loaded with COPY.",
)
def item_properties(
    context: dg.AssetExecutionContext, config: RawFilesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    paths = [_require(Path(config.raw_dir) / name) for name in ITEM_PROPERTIES_FILES]
    with postgres.connection() as conn:
        conn.execute(q.TRUNCATE_ITEM_PROPERTIES)
        _forget_old_rejects(conn, paths)
        loaded, rejected = _copy_chunks(
            conn,
            q.COPY_ITEM_PROPERTIES,
            q.ITEM_PROPERTIES_TYPES,
            _progress(context, iter_item_properties(paths)),
        )
        row = conn.execute(q.ITEM_PROPERTIES_SUMMARY).fetchone()
    total, n_items = row if row else (0, 0)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "items": n_items,
            "rows_read": loaded + rejected,
            "rows_quarantined": rejected,
            "sources": ", ".join(str(p) for p in paths),
        }
    )


@dg.asset(
    key=ITEMS,
    deps=[CATEGORY_TREE, ITEM_PROPERTIES],
    group_name=GROUP,
    kinds={"postgres"},
    description="Each item's current category and availability (its latest snapshots) and its category path "
    "from the category up to the root.",
)
def items(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        conn.execute(q.TRUNCATE_ITEMS)
        conn.execute(q.REBUILD_ITEMS)
        summary = conn.execute(q.ITEMS_SUMMARY).fetchone()
        preview = conn.execute(q.ITEMS_PREVIEW).fetchall()
    total, with_category, available, with_path, depth = summary if summary else (0, 0, 0, 0, 0)
    context.log.info(f"items: {total:,} ({with_category:,} with a category, {available:,} available)")
    table = "\n".join(
        ["| itemid | categoryid | available | category_path |", "|---|---|---|---|"]
        + [f"| {i} | {c} | {a} | {p} |" for i, c, a, p in preview]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "with_category": with_category,
            "available": available,
            "with_category_path": with_path,
            "max_depth": depth,
            "preview": dg.MetadataValue.md(table),
        }
    )
