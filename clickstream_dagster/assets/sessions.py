"""Sessions, the funnel, the item and category funnels and retention: the library's
`clickstream_dagster.analytics.sessions`, as four assets that one step keeps in one transaction.

Why the ingest runs and not declarative automation: the step must see every loaded event exactly once, and
the loading transaction's queue already says what is new; a step in each ingest run (and in the quarantine
replay) applies it within seconds of the load, with no extra run, no extra tick and nothing to schedule. One
step applies at a time: a run whose step finds another one applying leaves its events to it (that step takes
the queue again before it stops) and materializes nothing, so under a backlog the queue is applied in few,
large steps (cheaper per event) while the other runs go on loading.

While ingestion catches up (the newest raw_events run left more than `defer_while_lag_above` messages to
read), the step defers to a later run, up to `max_defer_seconds` after the oldest queued span: a backlog is
then applied in one large step after the windows, the work a catch-up is for, instead of in many steps that
compete with the loading for the same cores.
"""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
from pydantic import Field

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.analytics.sessions.update import (
    SessionsCheck,
    apply_queued,
    check_sessions,
    queue_head,
)
from clickstream_dagster.assets.ingestion import RAW_EVENTS
from clickstream_dagster.resources import PostgresResource

SESSIONS = dg.AssetKey("sessions")
SESSION_FUNNEL = dg.AssetKey("session_funnel")
ITEM_FUNNEL = dg.AssetKey("item_funnel")
RETENTION = dg.AssetKey("retention")
GROUP = "shopper_analytics"

_FRESH = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=10))

SPECS = [
    dg.AssetSpec(
        SESSIONS,
        deps=[RAW_EVENTS],
        group_name=GROUP,
        kinds={"postgres"},
        freshness_policy=_FRESH,
        description=(
            "`sessions`: one row per visitor session (events with gaps of at most the session gap, default 30 "
            "minutes): start, end, duration, events, views, add-to-carts, transactions, distinct items, entry "
            "and exit item, bounced, converted, cart abandoned. Exact for any arrival order (docs/analytics.md)."
        ),
    ),
    dg.AssetSpec(
        SESSION_FUNNEL,
        deps=[RAW_EVENTS],
        group_name=GROUP,
        kinds={"postgres"},
        freshness_policy=_FRESH,
        description=(
            "The view -> cart -> purchase funnel per hour and per day of session start (view `funnel`): "
            "sessions and visitors at each step, step conversion rates, bounce rate, median session length and "
            "cart abandonment rate (tables funnel_counts, session_lengths)."
        ),
    ),
    dg.AssetSpec(
        ITEM_FUNNEL,
        deps=[RAW_EVENTS],
        group_name=GROUP,
        kinds={"postgres"},
        description=(
            "The same funnel per item and per category over all time (views `item_funnel`, `category_funnel`; "
            "categoryid -1: unknown): which items and categories convert, and which only get looked at."
        ),
    ),
    dg.AssetSpec(
        RETENTION,
        deps=[RAW_EVENTS],
        group_name=GROUP,
        kinds={"postgres"},
        description=(
            "Weekly cohorts by first-seen week (views `retention`, `cohorts`): the share of each cohort active "
            "1, 2, ... weeks after it, and the share of its sessions from returning visitors."
        ),
    ),
]

ASSET_KEYS = [spec.key for spec in SPECS]

CHECKS = [
    dg.AssetCheckSpec(
        "every_event_in_one_session",
        asset=SESSIONS,
        description=(
            "the sessions' events add up to clickstream_events (visitors with events still queued left out), "
            "and for every visitor this step touched: their sessions hold exactly their stored events and no two "
            "are within the session gap of each other"
        ),
    ),
    dg.AssetCheckSpec(
        "funnel_steps_nested",
        asset=SESSION_FUNNEL,
        description=(
            "per hour and per day, no funnel step counts more visitors than the step before it or than the "
            "period's visitors, and no period more visitors or bounces than sessions"
        ),
    ),
    dg.AssetCheckSpec(
        "cohorts_add_up",
        asset=RETENTION,
        description=(
            "the cohorts' visitors add up to the distinct visitors stored (the loading transaction's visitor "
            "sets) and their sessions to the sessions"
        ),
    ),
]


class ShopperAnalyticsConfig(dg.Config):
    defer_while_lag_above: int = Field(
        default=100_000,
        description="Defer to a later run while the newest raw_events run left more messages than this to read",
    )
    max_defer_seconds: float = Field(
        default=120.0, description="...but never once the oldest queued span has waited this long"
    )


def _catching_up(context: dg.AssetExecutionContext) -> int | None:
    """The consumer lag the newest raw_events run reported (None if unknown)."""
    records = context.instance.fetch_materializations(RAW_EVENTS, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    lag = records[0].asset_materialization.metadata.get("consumer_lag_after_run")
    value = getattr(lag, "value", None)
    return int(value) if isinstance(value, int | float) else None


@dg.multi_asset(
    specs=[spec.replace_attributes(skippable=True) for spec in SPECS],  # see apply_queued
    check_specs=CHECKS,
    # A run that leaves the queue to another step materializes and checks nothing.
    can_subset=True,
    name="shopper_analytics",
    # Last in an ingest run: the live view and windowed_stats first.
    op_tags={"dagster/priority": "-1"},
    description="Apply the events loaded since the last step to sessions, the funnels and retention",
)
def shopper_analytics(
    context: dg.AssetExecutionContext, config: ShopperAnalyticsConfig, postgres: PostgresResource
) -> Iterator[object]:
    gap = session_gap_ms()
    lag = _catching_up(context)
    if lag is not None and lag > config.defer_while_lag_above:
        with postgres.connection() as conn:
            waited = queue_head(conn).waited_s
        if waited < config.max_defer_seconds:
            context.log.info(
                f"deferred: ingestion is catching up ({lag:,} messages left to read); the queue's oldest span "
                f"waited {waited:.0f} s of at most {config.max_defer_seconds:.0f}"
            )
            return
    steps = apply_queued(postgres.connection, gap)
    if not steps:
        context.log.info("another step is applying the queue (it takes what this run loaded, too)")
        return
    for step in steps:
        context.log.info(
            f"{step.spans_taken:,} queued spans -> {step.spans:,} spans of {len(step.visitors):,} visitors: "
            f"{step.events_read:,} events re-read, {step.sessions_removed:,} sessions replaced by "
            f"{step.sessions_written:,} in {step.seconds:.2f} s"
            + (" (rebuilt for a new gap)" if step.rebuilt else "")
        )
    with postgres.connection() as conn:
        check = check_sessions(conn, steps[-1].visitors, gap)
    meta = {
        "steps": len(steps),
        "spans_applied": sum(s.spans_taken for s in steps),
        "events_reread": sum(s.events_read for s in steps),
        "sessions_written": sum(s.sessions_written for s in steps),
        "sessions_removed": sum(s.sessions_removed for s in steps),
        "seconds": round(sum(s.seconds for s in steps), 3),
        "session_gap_minutes": gap / 60_000,
    }
    materialized: list[dg.MaterializeResult] = [
        dg.MaterializeResult(asset_key=SESSIONS, metadata={**meta, "dagster/row_count": check.sessions}),
        dg.MaterializeResult(asset_key=SESSION_FUNNEL, metadata={"periods": check.periods}),
        dg.MaterializeResult(asset_key=ITEM_FUNNEL),
        dg.MaterializeResult(asset_key=RETENTION, metadata={"visitors": check.cohort_visitors}),
    ]
    # Every table is written by the step whatever the selection; what is reported follows it.
    yield from (m for m in materialized if m.asset_key in context.selected_asset_keys)
    selected_checks = {key.name for key in context.selected_asset_check_keys}
    yield from (c for c in _check_results(check) if c.check_name in selected_checks)


def _check_results(c: SessionsCheck) -> Iterator[dg.AssetCheckResult]:
    yield dg.AssetCheckResult(
        asset_key=SESSIONS,
        check_name="every_event_in_one_session",
        passed=c.events_in_one_session,
        metadata={
            "session_events": c.session_events,
            "stored_events": c.stored_events,
            "visitors_still_queued": c.queued_visitors,
            "visitors_recounted": c.touched_visitors,
            "sessions_within_the_gap": c.too_close,
            "visitors_miscounted": c.miscounted,
        },
        description=None
        if c.events_in_one_session
        else (
            f"sessions hold {c.session_events:,} events, clickstream_events {c.stored_events:,}; "
            f"{c.miscounted:,} visitors miscounted, {c.too_close:,} pairs of sessions within the gap"
        ),
    )
    yield dg.AssetCheckResult(
        asset_key=SESSION_FUNNEL,
        check_name="funnel_steps_nested",
        passed=c.bad_periods == 0,
        metadata={"periods": c.periods, "periods_violating": c.bad_periods},
        description=f"{c.bad_periods:,} periods count more at a step than before it"
        if c.bad_periods
        else None,
    )
    yield dg.AssetCheckResult(
        asset_key=RETENTION,
        check_name="cohorts_add_up",
        passed=c.retention_adds_up,
        metadata={
            "cohort_visitors": c.cohort_visitors,
            "distinct_visitors": c.distinct_visitors,
            "cohort_sessions": c.cohort_sessions,
            "sessions": c.sessions,
        },
        description=None
        if c.retention_adds_up
        else (
            f"cohorts hold {c.cohort_visitors:,} visitors of {c.distinct_visitors:,} and "
            f"{c.cohort_sessions:,} sessions of {c.sessions:,}"
        ),
    )
