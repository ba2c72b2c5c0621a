"""Reference data (group `reference`): the category tree and item property snapshots from the RetailRocket CSVs,
and each item's current state derived from them (`data.reference` does the loading). Each materialization
replaces its table in one transaction (idempotent)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from clickstream_dagster.data.readers import Chunk
from clickstream_dagster.data.reference import load_category_tree, load_item_properties, rebuild_items
from clickstream_dagster.resources import PostgresResource

CATEGORY_TREE = dg.AssetKey("category_tree")
ITEM_PROPERTIES = dg.AssetKey("item_properties")
ITEMS = dg.AssetKey("items")
GROUP = "reference"


class RawFilesConfig(dg.Config):
    raw_dir: str = Field(default="data/raw", description="Folder with the RetailRocket CSV files")


@dg.asset(
    key=CATEGORY_TREE,
    group_name=GROUP,
    kinds={"postgres"},
    description="category_tree.csv: each category and its parent (empty for the 25 roots).",
)
def category_tree(
    context: dg.AssetExecutionContext, config: RawFilesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        loaded = load_category_tree(conn, Path(config.raw_dir))
    path = loaded.sources[0]
    context.log.info(
        f"{path}: read {loaded.rows_read:,} = loaded {loaded.rows_read - loaded.rows_quarantined:,}"
        f" + quarantined {loaded.rows_quarantined:,}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": loaded.rows,
            "roots": loaded.distinct,
            "rows_read": loaded.rows_read,
            "rows_quarantined": loaded.rows_quarantined,
            "source": str(path),
        }
    )


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
    def progress(chunk: Chunk, seen: int) -> None:
        context.log.info(f"{chunk.file.name}: {seen:,} rows read (line {chunk.last_line:,})")

    with postgres.connection() as conn:
        loaded = load_item_properties(conn, Path(config.raw_dir), progress)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": loaded.rows,
            "items": loaded.distinct,
            "rows_read": loaded.rows_read,
            "rows_quarantined": loaded.rows_quarantined,
            "sources": ", ".join(str(p) for p in loaded.sources),
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
        summary = rebuild_items(conn)
    context.log.info(
        f"items: {summary.items:,} ({summary.with_category:,} with a category, {summary.available:,} available)"
    )
    table = "\n".join(
        ["| itemid | categoryid | available | category_path |", "|---|---|---|---|"]
        + [f"| {i} | {c} | {a} | {p} |" for i, c, a, p in summary.preview]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.items,
            "with_category": summary.with_category,
            "available": summary.available,
            "with_category_path": summary.with_category_path,
            "max_depth": summary.max_depth,
            "preview": dg.MetadataValue.md(table),
        }
    )
