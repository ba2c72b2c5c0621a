"""Reference assets load the CSVs with COPY, quarantine bad rows, derive items, and re-run idempotently."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from clickstream_dagster.assets.reference import category_tree, item_properties, items
from clickstream_dagster.data.generator import generate
from clickstream_dagster.resources import PostgresResource

REFERENCE = [category_tree, item_properties, items]


def _materialize(postgres: PostgresResource, raw_dir: Path) -> dg.ExecuteInJobResult:
    config = {"config": {"raw_dir": str(raw_dir)}}
    return dg.materialize(
        REFERENCE,
        resources={"postgres": postgres},
        run_config={"ops": {"category_tree": config, "item_properties": config}},
    )


def test_generated_reference_data_loads_and_items_match_pandas(
    tmp_path: Path, postgres: PostgresResource
) -> None:
    generate(tmp_path, 20_000, seed=3)
    result = _materialize(postgres, tmp_path)
    assert result.success
    tree_meta = result.asset_materializations_for_node("category_tree")[0].metadata
    assert (tree_meta["dagster/row_count"].value, tree_meta["roots"].value) == (1669, 25)

    props = pd.concat(
        pd.read_csv(tmp_path / name, dtype={"value": str})
        for name in ("item_properties_part1.csv", "item_properties_part2.csv")
    )
    latest = (
        props[props.property.isin(["categoryid", "available"])]
        .sort_values("timestamp")
        .groupby(["itemid", "property"])
        .value.last()
        .unstack()
    )
    tree = pd.read_csv(tmp_path / "category_tree.csv").set_index("categoryid").parentid
    with postgres.connection() as conn:
        n_props = conn.execute("SELECT count(*) FROM item_properties").fetchone()
        rows = conn.execute("SELECT itemid, categoryid, available, category_path FROM items").fetchall()
    assert n_props == (len(props),)
    assert len(rows) == len(latest)
    for itemid, categoryid, available, path in rows[:500]:
        expected = latest.loc[itemid]
        assert categoryid == int(expected.categoryid)
        assert available == (expected.available == "1")
        walk = [categoryid]
        while not pd.isna(tree.get(walk[-1])):
            walk.append(int(tree[walk[-1]]))
        assert path == walk

    # Idempotent: the same files again give the same tables, not twice the rows.
    assert _materialize(postgres, tmp_path).success
    with postgres.connection() as conn:
        assert conn.execute("SELECT count(*) FROM item_properties").fetchone() == (len(props),)
        assert conn.execute("SELECT count(*) FROM category_tree").fetchone() == (1669,)


def test_bad_reference_rows_are_quarantined_with_file_and_line(
    tmp_path: Path, postgres: PostgresResource
) -> None:
    (tmp_path / "category_tree.csv").write_text("categoryid,parentid\n1,\n2,1\nx,1\n3,2\n")
    (tmp_path / "item_properties_part1.csv").write_text(
        "timestamp,itemid,property,value\n"
        "1431226800000,10,categoryid,3\n"
        "1431226800000,10,available,1\n"
        "1431226800000,oops,available,1\n"
    )
    (tmp_path / "item_properties_part2.csv").write_text(
        "timestamp,itemid,property,value\n1441226800000,10,available,0\n1441226800000,11,790,n277200.000\n"
    )
    result = _materialize(postgres, tmp_path)
    assert result.success
    with postgres.connection() as conn:
        bad = conn.execute(
            "SELECT source_file, source_line, reason FROM quarantine ORDER BY source_line"
        ).fetchall()
        item = conn.execute(
            "SELECT categoryid, available, category_path FROM items WHERE itemid = 10"
        ).fetchone()
    assert [(Path(f).name, line) for f, line, _ in bad] == [
        ("category_tree.csv", 4),
        ("item_properties_part1.csv", 4),
    ]
    assert all(reason for *_, reason in bad)
    assert item == (3, False, [3, 2, 1])  # latest snapshot wins: available 1 -> 0
    meta = result.asset_materializations_for_node("item_properties")[0].metadata
    assert (meta["rows_read"].value, meta["rows_quarantined"].value) == (5, 1)


def test_missing_files_fail_with_a_clear_message(tmp_path: Path, postgres: PostgresResource) -> None:
    with pytest.raises(Exception, match="clickstream generate"):
        _materialize(postgres, tmp_path / "nowhere")
