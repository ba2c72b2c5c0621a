"""The clickstream dashboard: `streamlit run dashboards/app.py`.

Reads the events database (DATABASE_URL) and Dagster's webserver through its GraphQL API
(CLICKSTREAM_DAGSTER_URL), or the local stack's defaults (`Settings.from_env()`). SQL lives in
`clickstream_dagster/sql/dashboard.py`, the GraphQL queries, loaders and figures in
`clickstream_dagster/dashboard/`. The live sections refresh every
CLICKSTREAM_DASHBOARD_REFRESH_SECONDS (default 5; 0 turns live refresh off).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from clickstream_dagster.clients.dagster import DagsterError
from clickstream_dagster.dashboard import charts, models, pipeline_health, shoppers, sources, traffic
from clickstream_dagster.settings import Settings, redact_url

REFRESH_ENV = "CLICKSTREAM_DASHBOARD_REFRESH_SECONDS"
DEFAULT_REFRESH_S = 5
LIVE_TTL_S = 2  # counts, windows, health: at most this stale
SLOW_TTL_S = 30  # scans of the whole event table, the registry
UNKNOWN_VISITOR = "unknown visitor (popular fallback)"

NOTHING_INGESTED = (
    "Nothing ingested yet. Run `make demo` for the whole pipeline, or start the stack with `make up` and "
    "stream events in with `.venv/bin/clickstream produce --file data/raw/events.csv` while Dagster ingests them."
)
NO_WINDOWS = (
    "`windowed_stats` is empty: Dagster computes it after each ingest run, so it fills in once events arrive "
    "(`make demo`, or `make up` plus `clickstream produce`)."
)
NO_SESSIONS = (
    "No sessions yet: the `shopper_analytics` step of every ingest run builds them from the events it loaded, "
    "so they appear with the first ingested events (`make demo`, or `make up` plus `clickstream produce`)."
)
NO_CATEGORIES = (
    "Categories appear once the reference assets (`category_tree`, `item_properties`, `items`) are "
    "materialized: `make demo` loads them."
)

log = logging.getLogger("clickstream_dagster.dashboard")
T = TypeVar("T")

st.set_page_config(page_title="Clickstream dashboard", page_icon=":material/monitoring:", layout="wide")


# ---- data access: one pool and one webserver client (per process), short-lived query caches -----------------


@st.cache_resource(show_spinner=False, on_release=lambda opened: opened.close())
def open_sources(events_url: str, dagster_url: str) -> sources.Sources:
    return sources.connect(events_url, dagster_url)


def _run(name: str, urls: tuple[str, str], args: tuple[Any, ...]) -> Any:
    """The loader `module.function` named by `name` (the cache key), on the source it reads."""
    connected = open_sources(*urls)
    module, function = name.rsplit(".", 1)
    loader = getattr(LOADER_MODULES[module], function)
    return loader(connected.dagster if name == DAGSTER_LOADER else connected.events, *args)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=256)
def _live(name: str, urls: tuple[str, str], args: tuple[Any, ...]) -> Any:
    return _run(name, urls, args)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False, max_entries=256)
def _slow(name: str, urls: tuple[str, str], args: tuple[Any, ...]) -> Any:
    return _run(name, urls, args)


URLS = sources.source_urls(Settings.from_env())
# Each page's loaders (one module per page); the one that reads Dagster's webserver instead of the database.
LOADER_MODULES = {m.__name__.rsplit(".", 1)[-1]: m for m in (traffic, shoppers, pipeline_health, models)}
DAGSTER_LOADER = "pipeline_health.dagster_health"


def load(loader: Callable[..., T], *args: Any, slow: bool = False) -> T:
    """`loader(database or webserver, *args)`, cached for a few seconds (`slow`: half a minute)."""
    name = f"{loader.__module__.rsplit('.', 1)[-1]}.{loader.__name__}"
    result: T = (_slow if slow else _live)(name, URLS, args)
    return result


def guarded(render: Callable[[], None]) -> None:
    """Render a section; a problem becomes a note in that section, never a stack trace."""
    try:
        render()
    except (sources.DashboardError, DagsterError) as exc:
        st.warning(str(exc), icon=":material/warning:")
    except Exception as exc:
        log.exception("dashboard section failed")
        st.error(f"This section failed: {type(exc).__name__}: {exc}", icon=":material/error:")


def ago(when: datetime | pd.Timestamp | None, now: datetime) -> str:
    if when is None or pd.isna(when):
        return "never"
    seconds = max(0.0, (now - pd.Timestamp(when).to_pydatetime()).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def utc(when: datetime | pd.Timestamp | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "—" if when is None or pd.isna(when) else pd.Timestamp(when).tz_convert(UTC).strftime(fmt) + " UTC"


def plot(fig: Any, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False}, width="stretch")


# ---- sections ------------------------------------------------------------------------------------------------


def live_traffic() -> None:
    now = datetime.now(UTC)
    totals = load(traffic.totals)
    windows = load(traffic.windowed_summary)
    c = st.columns(5)
    c[0].metric("Events ingested", f"{totals.events:,}")
    c[1].metric("Quarantined", f"{totals.quarantined:,}")
    c[2].metric(
        "Newest event (UTC)",
        utc(totals.last_event_time, "%Y-%m-%d").removesuffix(" UTC"),
        help=utc(totals.last_event_time, "%Y-%m-%d %H:%M:%S"),
    )
    c[3].metric("Last ingest", ago(totals.last_ingested_at, now))
    c[4].metric("5-minute windows", f"{windows.windows:,}")
    if totals.events == 0:
        st.info(NOTHING_INGESTED, icon=":material/info:")

    st.subheader("Windowed stats over time")
    if windows.windows == 0:
        st.info(NO_WINDOWS if totals.events else NOTHING_INGESTED, icon=":material/info:")
    else:
        label = st.selectbox("Range", list(traffic.WINDOW_RANGES), key="window_range")
        frame = load(traffic.windowed_stats, label)
        per_window = traffic.WINDOW_RANGES[label][1] == "5 minutes"
        plot(charts.windowed_series(frame, per_window), "windowed_stats")
        st.caption(
            f"{windows.events:,} events in {windows.windows:,} windows from {utc(windows.first_window)} to "
            f"{utc(windows.last_window)} (event time); recomputed {ago(windows.updated_at, now)}."
        )

    left, right = st.columns(2)
    with left:
        st.subheader("Event types")
        stats = load(traffic.event_statistics)
        if stats.empty:
            st.info(NOTHING_INGESTED, icon=":material/info:")
        else:
            plot(charts.event_frequency(stats), "event_frequency")
            st.dataframe(
                stats[["event", "event_count", "unique_users", "unique_items", "share"]],
                hide_index=True,
                width="stretch",
                key="event_statistics",
                column_config={
                    "event_count": st.column_config.NumberColumn("events", format="localized"),
                    "unique_users": st.column_config.NumberColumn("visitors", format="localized"),
                    "unique_items": st.column_config.NumberColumn("items", format="localized"),
                    "share": st.column_config.NumberColumn("share", format="percent"),
                },
            )
    with right:
        st.subheader("Hourly traffic pattern")
        hourly = load(traffic.hourly_pattern)
        if hourly.empty:
            st.info(NO_WINDOWS if totals.events else NOTHING_INGESTED, icon=":material/info:")
        else:
            plot(charts.hourly_pattern(hourly), "hourly_pattern")
            st.caption(
                "Each event type's share of its own events per hour of day (UTC), from `windowed_stats` over the "
                f"last {traffic.HOURLY_PATTERN_DAYS} days."
            )

    st.subheader(f"Top 10 items of the last {traffic.TOP_ITEMS_HOURS} hours")
    top = load(traffic.top_items, 10, slow=True)
    if top.empty:
        st.info(NOTHING_INGESTED, icon=":material/info:")
        return
    chart, table = st.columns([3, 2])
    with chart:
        plot(charts.top_items(top), "top_items")
    with table:
        st.dataframe(
            top[["itemid", "events", "views", "addtocarts", "transactions", "categoryid", "category"]],
            hide_index=True,
            width="stretch",
            key="top_items_table",
            column_order=("itemid", "events", "transactions", "category"),
            column_config={
                "itemid": st.column_config.NumberColumn("item", format="%d"),
                "categoryid": st.column_config.NumberColumn("category id", format="%d"),
                "category": st.column_config.TextColumn("category path (root > leaf)"),
            },
        )
    if top["categoryid"].isna().all():
        st.caption(NO_CATEGORIES)


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def shoppers_page() -> None:
    f = load(shoppers.funnel)
    if f.sessions == 0:
        st.info(NO_SESSIONS, icon=":material/info:")
        return
    c = st.columns(6)
    c[0].metric("Sessions", f"{f.sessions:,}", help="A visitor's events with gaps of at most 30 minutes")
    c[1].metric(
        "View → cart", _pct(f.view_to_cart), help="Sessions that viewed and added to cart / that viewed"
    )
    c[2].metric(
        "Cart → purchase",
        _pct(f.cart_to_purchase),
        help="Sessions that added to cart and bought / that added",
    )
    c[3].metric(
        "View → purchase", _pct(f.view_to_purchase), help="Sessions that viewed and bought / that viewed"
    )
    c[4].metric(
        "Cart abandonment",
        _pct(f.abandonment),
        help="Sessions with an add-to-cart and no purchase / with an add-to-cart",
    )
    c[5].metric("Bounce rate", _pct(f.bounce), help="Sessions of exactly one event / all sessions")

    left, right = st.columns(2)
    with left:
        st.subheader("Funnel")
        plot(
            charts.funnel(
                [("viewed", f.viewed), ("…added to cart", f.viewed_carted), ("…and bought", f.all_steps)]
            ),
            "funnel",
        )
        st.caption(
            f"Sessions, each step nested in the one before it. {f.bought - f.carted_bought:,} of {f.bought:,} "
            "buying sessions bought without an add-to-cart in the same session (docs/analytics.md)."
        )
    with right:
        st.subheader("Retention by weekly cohort")
        cohorts = load(shoppers.retention, 12)
        if cohorts.empty:
            st.info(NO_SESSIONS, icon=":material/info:")
        else:
            plot(charts.retention_heatmap(cohorts), "retention")
            st.caption("Share of each first-seen week's visitors with a session 1, 2, … weeks later.")

    st.subheader("Sessions over time")
    label = st.selectbox("Range", list(shoppers.SESSION_RANGES), key="sessions_range")
    plot(charts.sessions_over_time(load(shoppers.sessions_over_time, label)), "sessions_over_time")

    converting, viewed = load(shoppers.top_items, 10, slow=True)
    left, right = st.columns(2)
    with left:
        st.subheader("Items that convert")
        if converting.empty:
            st.info(
                f"No item has {shoppers.MIN_VIEWING_SESSIONS} viewing sessions yet.", icon=":material/info:"
            )
        else:
            plot(charts.conversion_bars(converting, "itemid"), "converting_items")
    with right:
        st.subheader("Items most looked at")
        plot(charts.conversion_bars(viewed, "itemid"), "viewed_items")
    st.subheader("Categories: looked at and bought")
    cats = load(shoppers.categories, 15, slow=True)
    if cats.empty:
        st.info(NO_CATEGORIES, icon=":material/info:")
    else:
        plot(charts.conversion_bars(cats, "category"), "category_conversion")
        if (cats["categoryid"] == -1).all():
            st.caption(NO_CATEGORIES)


def pipeline_health_page() -> None:
    now = datetime.now(UTC)
    health = load(pipeline_health.dagster_health)
    recon = load(pipeline_health.reconciliation)
    reasons = load(pipeline_health.quarantine_by_reason)
    raw = (
        health.assets[health.assets["asset"] == pipeline_health.RAW_EVENTS_ASSET]
        if health.available
        else pd.DataFrame()
    )

    c = st.columns(4)
    lag = health.kafka_lag
    c[0].metric(
        "Kafka lag (messages)",
        "—" if lag is None else f"{lag:,}",
        help="`consumer_lag_after_run` of the last raw_events run",
    )
    c[1].metric("raw_events materialized", ago(raw["materialized_at"].iloc[0], now) if len(raw) else "—")
    c[2].metric("Quarantined rows", f"{int(reasons['rows'].sum()) if len(reasons) else 0:,}")
    reconciled = recon.ranges - recon.mismatched_ranges
    c[3].metric(
        "Offset ranges reconciled",
        f"{reconciled:,} of {recon.ranges:,}",
        delta=f"-{recon.mismatched_ranges:,} off" if recon.mismatched_ranges else None,
        help=(
            "Per range in `ingested_ranges`: messages read = rows inserted + rows quarantined, and messages "
            "read + offsets without a message + offsets lost = the range's offsets"
        ),
    )

    left, right = st.columns(2)
    with left:
        st.subheader("Last materialization per asset")
        if not health.available:
            st.warning(
                f"{health.note} Kafka lag and materialization times come from there.",
                icon=":material/warning:",
            )
        elif health.assets.empty:
            st.info(
                "Dagster has not materialized any asset yet: run `make demo`, or `make up` and produce events.",
                icon=":material/info:",
            )
        else:
            assets = health.assets.assign(age=[ago(t, now) for t in health.assets["materialized_at"]])
            st.dataframe(
                assets[["asset", "materialized_at", "age", "rows", "run_id"]],
                hide_index=True,
                width="stretch",
                key="asset_materializations",
                column_config={
                    "materialized_at": st.column_config.DatetimeColumn(
                        "last materialized (UTC)", format="YYYY-MM-DD HH:mm:ss"
                    ),
                    "rows": st.column_config.NumberColumn("rows", format="localized"),
                    "run_id": st.column_config.TextColumn("run"),
                },
            )
            if len(health.runs):
                st.caption(
                    "Runs in the last 24 h: "
                    + ", ".join(f"{s.lower()} {n:,}" for s, n in health.runs.itertuples(index=False))
                )
    with right:
        st.subheader("Kafka consumer lag")
        if not health.available:
            st.info("Needs Dagster's webserver (see the note on the left).", icon=":material/info:")
        elif health.raw_events["lag"].isna().all():
            st.info(
                "No raw_events run has recorded its lag yet: it is measured after every ingest run.",
                icon=":material/info:",
            )
        else:
            plot(charts.kafka_lag(health.raw_events), "kafka_lag")

    left, right = st.columns(2)
    with left:
        st.subheader("Quarantine by reason")
        if reasons.empty:
            st.success(
                "Nothing quarantined: every message and CSV row so far was valid.",
                icon=":material/check_circle:",
            )
        else:
            plot(charts.quarantine_reasons(reasons), "quarantine_reasons")
    with right:
        st.subheader("Reconciliation per partition")
        if recon.ranges == 0:
            st.info(f"No offset ranges ingested yet. {NOTHING_INGESTED}", icon=":material/info:")
        else:
            st.dataframe(
                recon.by_partition,
                hide_index=True,
                width="stretch",
                key="reconciliation",
                column_order=(
                    "kafka_partition",
                    "ranges",
                    "messages_read",
                    "rows_inserted",
                    "rows_quarantined",
                    "offsets_skipped",
                    "offsets_lost",
                    "mismatched_ranges",
                    "ingested_up_to",
                    "kafka_topic",
                    "last_ingested_at",
                ),
                column_config={
                    "kafka_topic": "topic",
                    "kafka_partition": "partition",
                    "messages_read": st.column_config.NumberColumn("read", format="localized"),
                    "rows_inserted": st.column_config.NumberColumn("inserted", format="localized"),
                    "rows_quarantined": st.column_config.NumberColumn("quarantined", format="localized"),
                    "offsets_skipped": st.column_config.NumberColumn(
                        "no message",
                        format="localized",
                        help="transaction markers, aborted transactions, compacted away",
                    ),
                    "offsets_lost": st.column_config.NumberColumn(
                        "lost", format="localized", help="deleted by retention before they were read"
                    ),
                    "mismatched_ranges": st.column_config.NumberColumn("off"),
                    "ingested_up_to": st.column_config.NumberColumn("ingested up to offset", format="%d"),
                    "last_ingested_at": st.column_config.DatetimeColumn(
                        "last range (UTC)", format="YYYY-MM-DD HH:mm:ss"
                    ),
                },
            )
            st.caption(
                f"{recon.total('messages_read'):,} messages read = {recon.total('rows_inserted'):,} inserted + "
                f"{recon.total('rows_quarantined'):,} quarantined, over {recon.ranges:,} offset ranges."
            )
            if not recon.mismatched.empty:
                off = recon.mismatched_ranges
                st.error(
                    f"{off:,} {'range does' if off == 1 else 'ranges do'} not reconcile (newest first):",
                    icon=":material/error:",
                )
                st.dataframe(recon.mismatched, hide_index=True, width="stretch", key="mismatched_ranges")
            if recon.total("offsets_lost"):
                st.error(
                    f"{recon.total('offsets_lost'):,} offsets were deleted by retention before they were read.",
                    icon=":material/error:",
                )
            if recon.open_gaps:
                st.error(
                    f"{recon.open_gaps:,} {'gap' if recon.open_gaps == 1 else 'gaps'} in the ledger: offsets "
                    "the sensor planned that no run ingested (requested again with backoff):",
                    icon=":material/error:",
                )
            if len(recon.gaps):
                st.dataframe(recon.gaps, hide_index=True, width="stretch", key="ledger_gaps")


def models_page() -> None:
    registry = load(models.model_registry, slow=True)
    if registry.models.empty:
        st.info(
            "No model trained yet: materialize the `ml` asset group in the Dagster UI "
            f"({Settings.from_env().dagster_url}) or run `make demo`.",
            icon=":material/info:",
        )
        return
    table = models.registry_table(registry)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="model_registry",
        column_config={
            "version": st.column_config.NumberColumn("version", format="%d"),
            "trained_at": st.column_config.DatetimeColumn("trained (UTC)", format="YYYY-MM-DD HH:mm"),
            "decided_at": st.column_config.DatetimeColumn("decided (UTC)", format="YYYY-MM-DD HH:mm"),
        },
    )
    if registry.metrics.empty:
        st.info("The registry rows hold no validation or test metrics to chart.", icon=":material/info:")
        return
    names = sorted(set(registry.metrics["metric"]))
    preferred = next((i for i, m in enumerate(names) if m.startswith("ndcg")), 0)
    metric = st.selectbox("Metric", names, index=preferred, key="model_metric")
    promoted = registry.models.loc[registry.models["status"] == "promoted", "version"]
    plot(
        charts.model_metrics(registry.metrics, metric, int(promoted.iloc[0]) if len(promoted) else None),
        "model_metrics",
    )


def _parse_visitor(choice: object) -> int | None:
    if choice is None or choice == UNKNOWN_VISITOR:
        return None
    try:
        return int(str(choice).strip())
    except ValueError:
        st.warning(f"`{choice}` is not a visitor id (a whole number).", icon=":material/warning:")
        return None


def _popular(title: str) -> None:
    popular = load(models.popular_items, 10)
    st.markdown(title)
    if popular.empty:
        st.info(
            "No popular list yet: it is computed with the model (`ml` assets; `make demo`).",
            icon=":material/info:",
        )
    else:
        st.dataframe(
            popular[["rank", "itemid", "visitors", "score", "trend", "category"]],
            hide_index=True,
            width="stretch",
            key="popular_items",
            column_config={"itemid": st.column_config.NumberColumn("item", format="%d")},
        )


def recommendation_explorer() -> None:
    visitors = load(models.recommended_visitors, 500, slow=True)
    covered, version = load(models.recommendation_coverage, slow=True)
    options: list[object] = [UNKNOWN_VISITOR, *visitors["visitorid"].tolist()]
    pick, typed = st.columns([2, 1])
    choice = pick.selectbox(
        "Visitor with recommendations", options, index=1 if len(options) > 1 else 0, key="visitor"
    )
    typed_id = typed.text_input("…or any visitor id", key="visitor_id", placeholder="e.g. 257597")
    if covered:
        st.caption(
            f"{covered:,} visitors have personal recommendations from model v{version}; the list shows the first {len(visitors):,}."
        )
    else:
        st.info(
            "No personal recommendations yet: they are written when a model is promoted (`ml` assets; `make demo`). "
            "Every visitor gets the popular list meanwhile.",
            icon=":material/info:",
        )
    visitorid = _parse_visitor(typed_id if typed_id.strip() else choice)
    if visitorid is None:
        _popular("**What an unknown visitor gets: the popular list**")
        return
    history = load(models.visitor_history, visitorid)
    recs = load(models.visitor_recommendations, visitorid)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**History of visitor {visitorid}**: {history.events:,} events, newest first")
        if history.recent.empty:
            st.info(f"Visitor {visitorid} has no events in `clickstream_events`.", icon=":material/info:")
        else:
            st.dataframe(
                history.recent,
                hide_index=True,
                width="stretch",
                key="visitor_history",
                column_config={
                    "event_time": st.column_config.DatetimeColumn(
                        "event time (UTC)", format="YYYY-MM-DD HH:mm:ss"
                    ),
                    "itemid": st.column_config.NumberColumn("item", format="%d"),
                    "categoryid": st.column_config.NumberColumn("category", format="%d"),
                    "transactionid": st.column_config.NumberColumn("transaction", format="%d"),
                },
            )
    with right:
        if recs.empty:
            _popular(f"**Visitor {visitorid} has no personal recommendations: the popular fallback**")
            return
        st.markdown(
            f"**Recommendations for visitor {visitorid}** (model v{int(recs['model_version'].iloc[0])})"
        )
        seen = set(history.recent["categoryid"].dropna().astype("int64"))
        recs = recs.assign(familiar_category=[c in seen for c in recs["categoryid"]])
        st.dataframe(
            recs[["rank", "itemid", "score", "categoryid", "familiar_category", "category"]],
            hide_index=True,
            width="stretch",
            key="visitor_recommendations",
            column_config={
                "itemid": st.column_config.NumberColumn("item", format="%d"),
                "score": st.column_config.NumberColumn("score", format="%.3f"),
                "categoryid": st.column_config.NumberColumn("category", format="%d"),
                "familiar_category": st.column_config.CheckboxColumn("category in their history"),
            },
        )


# ---- page ------------------------------------------------------------------------------------------------------


def live_traffic_section() -> None:
    guarded(live_traffic)


def pipeline_health_section() -> None:
    guarded(pipeline_health_page)


def refresh_seconds() -> int:
    try:
        return max(0, int(os.environ.get(REFRESH_ENV, DEFAULT_REFRESH_S)))
    except ValueError:
        return DEFAULT_REFRESH_S


def main() -> None:
    events_db, dagster_web = (redact_url(u) for u in URLS)
    with st.sidebar:
        st.header("Settings")
        default = refresh_seconds()
        live = st.toggle("Live refresh", value=default > 0, key="live", help=f"Default from {REFRESH_ENV}")
        every = st.number_input(
            "Refresh every (seconds)",
            1,
            600,
            default or DEFAULT_REFRESH_S,
            key="refresh_s",
            disabled=not live,
        )
        st.markdown(
            "**Sections**\n\n- [Live traffic](#live-traffic)\n- [Shoppers](#shoppers)\n"
            "- [Pipeline health](#pipeline-health)\n"
            "- [Models](#models)\n- [Recommendation explorer](#recommendation-explorer)"
        )
        st.caption(f"Events database: `{events_db}`  \nDagster webserver: `{dagster_web}`")
        st.link_button("Open the Dagster UI", URLS[1])

    st.title("Clickstream dashboard")
    try:
        load(traffic.totals)
    except (sources.DashboardError, DagsterError) as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    run_every = float(every) if live else None
    st.caption(
        f"Kafka → Dagster → PostgreSQL. Live sections refresh every {every:g} s."
        if live
        else "Live refresh is off."
    )

    st.header("Live traffic", anchor="live-traffic")
    st.fragment(run_every=run_every)(live_traffic_section)()
    st.header("Shoppers", anchor="shoppers")
    guarded(shoppers_page)
    st.header("Pipeline health", anchor="pipeline-health")
    st.fragment(run_every=run_every)(pipeline_health_section)()
    st.header("Models", anchor="models")
    guarded(models_page)
    st.header("Recommendation explorer", anchor="recommendation-explorer")
    guarded(recommendation_explorer)


main()
