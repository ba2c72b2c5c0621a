from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.data.generator import (
    FULL_ADDTOCARTS,
    FULL_EVENTS,
    FULL_TRANSACTION_IDS,
    FULL_TRANSACTIONS,
    FULL_VIEWS,
    FULL_VISITORS,
    MARKER_FILE,
    GenerationSummary,
    Plan,
    SessionStatistics,
    generate,
    parse_scale,
    session_statistics,
)
from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    CATEGORY_TREE_HEADER,
    EVENTS_FILE,
    EVENTS_HEADER,
    ITEM_PROPERTIES_FILES,
    ITEM_PROPERTIES_HEADER,
    RowError,
    category_tree_problems,
    iter_category_tree,
    iter_events,
    iter_item_properties,
)

MEDIUM = 200_000
START = pd.Timestamp("2015-05-03", tz="UTC")
END = pd.Timestamp("2015-09-19", tz="UTC")  # exclusive
FILES = (EVENTS_FILE, CATEGORY_TREE_FILE, *ITEM_PROPERTIES_FILES)
# Target bands of the view sessions under the next-item protocol (items with >= 5 views, 30-minute gap,
# sessions with >= 2 views). docs/recommendations.md ("Generated sessions against the published benchmark")
# says where each comes from: they are estimates from the published next-item scores, not published statistics.
SESSION_BANDS = {
    "mean_length": (3.0, 4.5),
    "median_length": (2.0, 3.0),
    "mean_distinct_items": (2.2, 3.2),
    "repeat_view_share": (0.25, 0.45),
    "same_item_share": (0.10, 0.25),
}


def load_events(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / EVENTS_FILE, dtype={"transactionid": "Int64", "event": "category"})


def load_properties(folder: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_csv(folder / name, dtype={"property": str, "value": str}) for name in ITEM_PROPERTIES_FILES],
        ignore_index=True,
    )


def latest_category(properties: pd.DataFrame) -> pd.Series:
    rows = properties[properties["property"] == "categoryid"].sort_values("timestamp", kind="stable")
    return rows.groupby("itemid")["value"].last().astype(int)


def assert_sessions_in_bands(stats: SessionStatistics) -> None:
    print(f"sessions under the next-item protocol: {stats}")
    outside = {
        name: round(getattr(stats, name), 3)
        for name, (lo, hi) in SESSION_BANDS.items()
        if not lo <= getattr(stats, name) <= hi
    }
    assert not outside, f"outside {SESSION_BANDS}: {outside}"


def assert_funnel_coherent(events: pd.DataFrame) -> None:
    """Every cart follows a view, every purchase follows a cart (same visitor and item, strictly earlier)."""
    key = ["visitorid", "itemid"]
    views = events[events["event"] == "view"]
    carts = events[events["event"] == "addtocart"]
    purchases = events[events["event"] == "transaction"]
    first_view = views.groupby(key)["timestamp"].min().rename("first_view")
    checked = carts.join(first_view, on=key)
    assert checked["first_view"].notna().all(), "a cart without any view of its item by its visitor"
    assert (checked["first_view"] < checked["timestamp"]).all(), "a cart before the first view"
    first_cart = carts.groupby(key)["timestamp"].min().rename("first_cart")
    checked = purchases.join(first_cart, on=key)
    assert checked["first_cart"].notna().all(), "a purchase without a cart"
    assert (checked["first_cart"] < checked["timestamp"]).all(), "a purchase before the cart"
    per_id = purchases.groupby("transactionid").agg(
        visitors=("visitorid", "nunique"), times=("timestamp", "nunique"), items=("itemid", "size")
    )
    assert (per_id["visitors"] == 1).all() and (per_id["times"] == 1).all()
    assert events.loc[events["event"] != "transaction", "transactionid"].isna().all()
    assert purchases["transactionid"].notna().all()


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    folder = tmp_path_factory.mktemp("medium")
    return folder, generate(folder, MEDIUM, seed=11)


@pytest.fixture(scope="module")
def medium_events(medium: tuple[Path, GenerationSummary]) -> pd.DataFrame:
    return load_events(medium[0])


@pytest.fixture(scope="module")
def medium_properties(medium: tuple[Path, GenerationSummary]) -> pd.DataFrame:
    return load_properties(medium[0])


# --- plan ---------------------------------------------------------------------------------------------------


def test_full_plan_matches_the_published_totals() -> None:
    plan = Plan.for_scale("full")
    assert (plan.events, plan.views, plan.addtocarts, plan.transactions) == (
        2_756_101,
        2_664_312,
        69_332,
        22_457,
    )
    assert (plan.transaction_ids, plan.visitors, plan.catalog_items) == (17_672, 1_407_580, 417_053)


@pytest.mark.parametrize("events", [100, 1_000, 30_000, MEDIUM, 5_000_000])
def test_plans_scale_proportionally(events: int) -> None:
    plan = Plan.for_scale(events)
    assert plan.views + plan.addtocarts + plan.transactions == events
    assert plan.addtocarts == pytest.approx(events * FULL_ADDTOCARTS / FULL_EVENTS, abs=1)
    assert plan.transactions == pytest.approx(events * FULL_TRANSACTIONS / FULL_EVENTS, abs=1)
    assert plan.visitors == pytest.approx(events * FULL_VISITORS / FULL_EVENTS, abs=1)


def test_scale_parsing() -> None:
    assert parse_scale("small") == "small" and parse_scale(" FULL ") == "full"
    assert parse_scale("200_000") == 200_000 and parse_scale("1,000,000") == 1_000_000
    assert Plan.for_scale("small").events == 30_000
    with pytest.raises(ValueError, match="scale must be"):
        parse_scale("huge")
    with pytest.raises(ValueError, match=">= 100"):
        Plan.for_scale(10)


# --- formats ------------------------------------------------------------------------------------------------


def test_headers_and_every_row_pass_the_readers(medium: tuple[Path, GenerationSummary]) -> None:
    folder, summary = medium
    for name, header in (
        (EVENTS_FILE, EVENTS_HEADER),
        (CATEGORY_TREE_FILE, CATEGORY_TREE_HEADER),
        (ITEM_PROPERTIES_FILES[0], ITEM_PROPERTIES_HEADER),
        (ITEM_PROPERTIES_FILES[1], ITEM_PROPERTIES_HEADER),
    ):
        with (folder / name).open() as f:
            assert f.readline() == ",".join(header) + "\n"
    errors = [outcome for _, outcome in iter_events(folder / EVENTS_FILE) if isinstance(outcome, RowError)]
    assert errors == []
    chunks = list(iter_item_properties(folder))
    assert [r for c in chunks for r in c.rejected] == []
    assert sum(len(c.frame) for c in chunks) == summary.property_rows
    tree = list(iter_category_tree(folder / CATEGORY_TREE_FILE))
    assert [r for c in tree for r in c.rejected] == []


def test_exact_totals_and_summary(
    medium: tuple[Path, GenerationSummary], medium_events: pd.DataFrame
) -> None:
    _, summary = medium
    plan = Plan.for_scale(MEDIUM)
    counts = medium_events["event"].value_counts()
    assert len(medium_events) == MEDIUM == summary.events
    assert (counts["view"], counts["addtocart"], counts["transaction"]) == (
        plan.views,
        plan.addtocarts,
        plan.transactions,
    )
    assert (summary.views, summary.addtocarts, summary.transactions) == (
        plan.views,
        plan.addtocarts,
        plan.transactions,
    )
    assert medium_events["visitorid"].nunique() == summary.visitors == plan.visitors
    assert medium_events["itemid"].nunique() == summary.items_in_events
    assert medium_events["transactionid"].nunique() == summary.transaction_ids == plan.transaction_ids
    assert summary.file_rows[EVENTS_FILE] == MEDIUM
    assert summary.file_bytes[EVENTS_FILE] == (medium[0] / EVENTS_FILE).stat().st_size
    assert summary.lines()[0].startswith(f"{MEDIUM:,} events = ")


def test_time_span(medium_events: pd.DataFrame) -> None:
    times = pd.to_datetime(medium_events["timestamp"], unit="ms", utc=True)
    assert times.min() >= START and times.max() < END
    assert times.min().date().isoformat() == "2015-05-03"
    assert times.max().date().isoformat() == "2015-09-18"


def test_ids_are_plain_integers_and_rows_are_shuffled(
    medium: tuple[Path, GenerationSummary], medium_events: pd.DataFrame
) -> None:
    text = (medium[0] / EVENTS_FILE).read_text()
    assert re.search(r"^\d{13},\d+,transaction,\d+,\d+$", text, re.MULTILINE)
    assert not re.search(r"\.\d", text)  # no "14418.0"
    assert re.search(r"^\d{13},\d+,view,\d+,$", text, re.MULTILINE)
    rising = (np.diff(medium_events["timestamp"].to_numpy()) > 0).mean()
    assert 0.4 < rising < 0.6  # not sorted by time, like the original


# --- shape --------------------------------------------------------------------------------------------------


def test_funnel_is_coherent(medium_events: pd.DataFrame) -> None:
    assert_funnel_coherent(medium_events)
    purchases = medium_events[medium_events["event"] == "transaction"]
    sizes = purchases.groupby("transactionid").size()
    assert sizes.max() > 1  # some purchases hold several items
    assert 1.1 < sizes.mean() < 1.5  # published: 22,457 rows / 17,672 ids = 1.27


def test_visitor_activity_is_heavy_tailed_with_bots(medium_events: pd.DataFrame) -> None:
    per_visitor = medium_events.groupby("visitorid").size()
    assert per_visitor.median() <= 2
    assert per_visitor.max() >= 100 * per_visitor.median()
    assert (per_visitor == 1).mean() > 0.6
    # Bots: hundreds of views, seconds apart.
    views = medium_events[medium_events["event"] == "view"].sort_values(["visitorid", "timestamp"])
    heavy = per_visitor[per_visitor >= 150].index
    gaps = (
        views[views["visitorid"].isin(heavy)]
        .groupby("visitorid")["timestamp"]
        .apply(lambda t: np.median(np.diff(t.to_numpy())))
    )
    assert (gaps < 10_000).sum() >= 2


def test_item_popularity_is_heavy_tailed(medium_events: pd.DataFrame) -> None:
    per_item = medium_events.groupby("itemid").size().sort_values(ascending=False)
    top = per_item.iloc[: max(1, len(per_item) // 100)].sum() / per_item.sum()
    assert top > 0.25
    assert per_item.median() <= 3


def test_sessions_and_daily_cycle(medium_events: pd.DataFrame) -> None:
    events = medium_events.sort_values(["visitorid", "timestamp"])
    new_visitor = events["visitorid"].ne(events["visitorid"].shift()).to_numpy()
    gap = np.diff(events["timestamp"].to_numpy(), prepend=0)
    sessions = int((new_visitor | (gap > 30 * 60 * 1000)).sum())
    assert 1.3 < len(events) / sessions < 3.0
    # Visitors come back: many active visitors have several sessions on different days.
    assert sessions > events["visitorid"].nunique() * 1.1
    hours = pd.to_datetime(events["timestamp"], unit="ms").dt.hour.value_counts()
    assert len(hours) == 24
    assert hours.max() > 3 * hours.min()


def test_session_statistics_lie_in_the_target_bands(medium_events: pd.DataFrame) -> None:
    assert_sessions_in_bands(session_statistics(medium_events))
    # As they are (no filters): most sessions are one view, and few next views repeat the item on screen.
    raw = session_statistics(medium_events, min_item_views=1, min_session_views=1)
    assert raw.median_length == 1.0 and raw.same_item_share < SESSION_BANDS["same_item_share"][1]


def test_visitors_prefer_a_few_categories(
    medium_events: pd.DataFrame, medium_properties: pd.DataFrame
) -> None:
    category = latest_category(medium_properties)
    views = medium_events[medium_events["event"] == "view"].assign(
        category=lambda d: d["itemid"].map(category)
    )
    assert views["category"].notna().all()
    per_visitor = views.groupby("visitorid").size()
    active = views[views["visitorid"].isin(per_visitor[(per_visitor >= 10) & (per_visitor < 500)].index)]
    shuffled = active.assign(category=np.random.default_rng(0).permutation(active["category"].to_numpy()))

    def top2_share(frame: pd.DataFrame) -> float:
        counts = frame.groupby(["visitorid", "category"]).size().sort_values(ascending=False)
        top2 = counts.groupby(level="visitorid").head(2).groupby(level="visitorid").sum()
        return float((top2 / frame.groupby("visitorid").size()).mean())

    real, random = top2_share(active), top2_share(shuffled)
    print(f"share of views in a visitor's top-2 categories: {real:.2f} (random: {random:.2f})")
    assert real > 0.6 and real > 2.5 * random


def test_category_aware_popularity_beats_global_popularity(
    medium_events: pd.DataFrame, medium_properties: pd.DataFrame
) -> None:
    """The point of the taste structure: a recommender that knows the visitor beats popularity."""
    category = latest_category(medium_properties)
    views = medium_events[medium_events["event"] == "view"].sort_values(["visitorid", "timestamp"])
    last = views.groupby("visitorid").tail(1)
    train = views.drop(last.index)
    seen = train.groupby("visitorid").size()
    last = last[last["visitorid"].isin(seen[seen >= 4].index)]
    top20 = set(train["itemid"].value_counts().index[:20])
    train = train.assign(category=train["itemid"].map(category))
    per_category = train.groupby(["visitorid", "category"]).size().sort_values(ascending=False, kind="stable")
    favourite = per_category.groupby(level="visitorid").head(1).reset_index(level="category")["category"]
    ranked = train.groupby(["category", "itemid"]).size().sort_values(ascending=False)
    top_by_category = ranked.groupby(level="category").head(20).reset_index().groupby("category")["itemid"]
    recs = top_by_category.agg(set)
    hit_popular = last["itemid"].isin(top20).mean()
    hit_taste = np.mean(
        [
            item in recs.get(favourite[v], set())
            for v, item in zip(last["visitorid"], last["itemid"], strict=True)
        ]
    )
    print(f"HR@20 of the last view: global popularity {hit_popular:.3f}, favourite category {hit_taste:.3f}")
    assert hit_taste > 1.5 * hit_popular


def test_category_tree_is_full_size_at_any_scale(medium: tuple[Path, GenerationSummary]) -> None:
    tree = pd.concat([c.frame for c in iter_category_tree(medium[0] / CATEGORY_TREE_FILE)])
    assert len(tree) == 1_669 and tree["categoryid"].is_unique
    assert tree["parentid"].isna().sum() == 25
    assert category_tree_problems(tree) == []
    assert tree["categoryid"].max() < 1_699


def test_item_properties_are_snapshots(
    medium: tuple[Path, GenerationSummary],
    medium_events: pd.DataFrame,
    medium_properties: pd.DataFrame,
) -> None:
    props = medium_properties
    part1 = medium[1].file_rows[ITEM_PROPERTIES_FILES[0]]
    assert part1 / len(props) == pytest.approx(0.5425, abs=0.001)
    # Weekly snapshots, Sundays 03:00 UTC.
    stamps = pd.to_datetime(props["timestamp"].drop_duplicates(), unit="ms", utc=True)
    assert (stamps.dt.dayofweek == 6).all() and (stamps.dt.hour == 3).all() and len(stamps) > 10
    items = props["itemid"].unique()
    assert set(medium_events["itemid"].unique()) <= set(items)
    for name in ("categoryid", "available", "790"):
        assert props.loc[props["property"] == name, "itemid"].nunique() == len(items)
    # Histories: several snapshots per item, and some categories changed (so the latest one must win).
    categories = props[props["property"] == "categoryid"]
    per_item = categories.groupby("itemid")["value"].agg(["size", "nunique"])
    assert (per_item["size"] > 1).mean() > 0.2 and (per_item["nunique"] > 1).sum() > 0
    available = props[props["property"] == "available"].sort_values(["itemid", "timestamp"])
    same_item = available["itemid"].eq(available["itemid"].shift())
    assert (available["value"].ne(available["value"].shift()) | ~same_item).all()  # rows record changes
    # Value formats.
    assert props.loc[props["property"] == "790", "value"].str.fullmatch(r"n\d+\.000").all()
    assert props.loc[props["property"] == "available", "value"].isin(["0", "1"]).all()
    hashed = props.loc[~props["property"].isin(["categoryid", "available", "790"])]
    assert hashed["property"].str.fullmatch(r"\d+").all() and hashed["property"].nunique() > 500
    token = r"(?:n\d+\.000|\d+)"
    assert hashed["value"].str.fullmatch(rf"{token}(?: {token})*").all()
    assert hashed["value"].str.contains(" ").any() and hashed["value"].str.startswith("n").any()


# --- determinism, scales, safety ----------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", "small", seed=3)
    second = generate(tmp_path / "b", "small", seed=3)
    other = generate(tmp_path / "c", "small", seed=4)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / EVENTS_FILE).read_bytes() != (tmp_path / "c" / EVENTS_FILE).read_bytes()
    assert first.events == second.events == other.events == 30_000


@pytest.mark.parametrize("events", [100, 1_000, 10_000, 30_000])
def test_small_scales_keep_the_invariants(tmp_path: Path, events: int) -> None:
    summary = generate(tmp_path, events, seed=5)
    plan = Plan.for_scale(events)
    frame = load_events(tmp_path)
    counts = frame["event"].value_counts().reindex(["view", "addtocart", "transaction"], fill_value=0)
    assert counts.tolist() == [plan.views, plan.addtocarts, plan.transactions]
    assert frame["visitorid"].nunique() == plan.visitors
    assert_funnel_coherent(frame)
    assert summary.transaction_ids == pytest.approx(plan.transaction_ids, rel=0.1, abs=2)
    assert summary.categories == 1_669 and summary.root_categories == 25


def test_refuses_to_overwrite_files_it_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / EVENTS_FILE
    real.write_text("timestamp,visitorid,event,itemid,transactionid\n")
    with pytest.raises(FileExistsError, match="not written by the generator"):
        generate(tmp_path, 1_000, seed=1)
    assert real.read_text() == "timestamp,visitorid,event,itemid,transactionid\n"
    generate(tmp_path, 1_000, seed=1, overwrite=True)
    assert (tmp_path / MARKER_FILE).exists()
    generate(tmp_path, 1_000, seed=2)  # its own output can be replaced
    assert not list(tmp_path.glob("*.tmp"))


def test_progress_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path, 1_000, seed=1, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "writing" in captured.err and "done in" in captured.err


@pytest.mark.slow
def test_full_scale_matches_the_published_totals(tmp_path: Path) -> None:
    summary = generate(tmp_path, "full", seed=42)
    print()
    print("\n".join(summary.lines()))
    assert (summary.events, summary.views, summary.addtocarts, summary.transactions) == (
        FULL_EVENTS,
        FULL_VIEWS,
        FULL_ADDTOCARTS,
        FULL_TRANSACTIONS,
    )
    assert summary.visitors == pytest.approx(1_407_580, rel=0.03)
    assert summary.items_in_events == pytest.approx(235_061, rel=0.05)
    assert summary.transaction_ids == pytest.approx(FULL_TRANSACTION_IDS, rel=0.03)
    assert summary.catalog_items == 417_053 and summary.property_rows > 2_000_000
    assert (summary.categories, summary.root_categories) == (1_669, 25)
    assert summary.seconds < 120, "full scale should take about a minute or less"

    events = load_events(tmp_path)
    counts = events["event"].value_counts()
    assert (len(events), counts["view"], counts["addtocart"], counts["transaction"]) == (
        FULL_EVENTS,
        FULL_VIEWS,
        FULL_ADDTOCARTS,
        FULL_TRANSACTIONS,
    )
    assert events["visitorid"].nunique() == summary.visitors
    assert events["transactionid"].nunique() == summary.transaction_ids
    times = pd.to_datetime(events["timestamp"], unit="ms", utc=True)
    assert times.min().date().isoformat() == "2015-05-03" and times.max().date().isoformat() == "2015-09-18"
    assert_funnel_coherent(events)
    per_visitor = events.groupby("visitorid").size()
    assert per_visitor.median() <= 2 and per_visitor.max() >= 1_000
    assert_sessions_in_bands(session_statistics(events))
