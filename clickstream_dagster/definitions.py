"""The whole pipeline at a glance: every asset, check, sensor, schedule and resource is listed here."""

import dagster as dg

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.housekeeping import housekeeping
from clickstream_dagster.assets.ingestion import (
    RAW_EVENTS,
    REPLAY_JOB_NAME,
    QuarantineReplayConfig,
    RawEventsConfig,
    live_clickstream_events,
    raw_events,
    raw_events_checks,
)
from clickstream_dagster.assets.ml import (
    candidate_model,
    ml_dataset,
    ml_features,
    ml_interactions,
    popular_items,
    promoted_model,
    promotion_gate,
    recommendations,
    similar_items,
)
from clickstream_dagster.assets.reference import category_tree, item_properties, items
from clickstream_dagster.assets.sessions import shopper_analytics
from clickstream_dagster.resources import KafkaResource, PostgresResource, SlackResource, SparkResource
from clickstream_dagster.sensors.alerts import slack_on_run_failure
from clickstream_dagster.sensors.kafka import INGEST_JOB_NAME, build_kafka_sensor
from clickstream_dagster.sensors.sessions import build_sessions_sensor

# Kafka -> raw_events -> {live_clickstream_events, windowed_stats, event_statistics, sessions, session_funnel,
# item_funnel, retention}, one run per offset batch; the last four are one step (shopper_analytics), run alone
# when loaded events wait with no run left to apply them (stranded_sessions).
# In-process: a run is a few small steps, and a fresh step process would cost more than the step itself.
reference_data = dg.define_asset_job(
    "reference_data",
    selection=[category_tree, item_properties, items],
    executor_def=dg.in_process_executor,
    description="Load category_tree.csv and item_properties_part1/2.csv and derive each item's current state",
)

ingest_events = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=[raw_events, live_clickstream_events, windowed_stats, event_statistics, shopper_analytics],
    executor_def=dg.in_process_executor,
    description="Ingest an exact set of Kafka offset ranges and refresh everything computed from them",
)

# Repaired quarantine rows -> clickstream_events (exactly once, original coordinates) -> the same downstream
# assets. Launched by `clickstream quarantine replay` with filters; from the UI it replays every repaired row.
replay_quarantine = dg.define_asset_job(
    REPLAY_JOB_NAME,
    selection=[raw_events, live_clickstream_events, windowed_stats, event_statistics, shopper_analytics],
    executor_def=dg.in_process_executor,
    config=dg.RunConfig(
        ops={RAW_EVENTS.path[-1]: RawEventsConfig(replay_quarantine=QuarantineReplayConfig())}
    ),
    description="Re-ingest repaired quarantine rows exactly once, then refresh everything computed from them",
)

# Training data -> LightFM against baselines -> promotion gate -> serving tables. The gate's "keep the
# incumbent" is a successful run that skips the serving tables (promoted_model's output is optional); while no
# model was ever promoted, the popular lists are served. Daily, replacing the prototype's Airflow DAG.
ml_assets = [
    ml_dataset,
    ml_interactions,
    ml_features,
    candidate_model,
    promoted_model,
    recommendations,
    similar_items,
    popular_items,
]
train_recommender = dg.define_asset_job(
    "train_recommender",
    selection=dg.AssetSelection.assets(*ml_assets) | dg.AssetSelection.checks(promotion_gate),
    executor_def=dg.in_process_executor,
    # A failed run is an error (the gate's decisions succeed) and alerts; a retry would train from scratch,
    # minutes of work, so the operator decides once the cause is known.
    tags={"dagster/max_retries": "0"},
    description="Prepare training data, let every candidate type compete on validation, promote on evidence, rebuild serving",
)
daily_retraining = dg.ScheduleDefinition(
    name="daily_retraining",
    job=train_recommender,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain the recommender every day at 03:00 UTC on everything ingested",
)

# Old ingestion runs, replayed quarantine rows and unserved model artefacts deleted daily, each within its own
# retention setting (docs/operations.md, "Running it for months"); ticks by the instance's retention settings.
daily_housekeeping = dg.ScheduleDefinition(
    name="daily_housekeeping",
    job=housekeeping,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Housekeeping every day at 04:30 UTC, after the 03:00 retraining",
)

resources = {
    "kafka": KafkaResource(
        bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
        topic=dg.EnvVar("CLICKSTREAM_TOPIC"),
    ),
    "postgres": PostgresResource(url=dg.EnvVar("DATABASE_URL")),
    "spark": SparkResource(remote=dg.EnvVar("SPARK_REMOTE")),
    "slack": SlackResource(
        webhook_url=dg.EnvVar("SLACK_WEBHOOK_URL"),
        dagster_url=dg.EnvVar("CLICKSTREAM_DAGSTER_URL"),
    ),
}

defs = dg.Definitions(
    assets=[
        # ingestion
        raw_events,
        live_clickstream_events,
        # analytics
        windowed_stats,
        event_statistics,
        # shopper analytics: sessions, session_funnel, item_funnel, retention
        shopper_analytics,
        # reference
        category_tree,
        item_properties,
        items,
        # ml
        *ml_assets,
    ],
    asset_checks=[*raw_events_checks, promotion_gate],
    jobs=[ingest_events, replay_quarantine, reference_data, train_recommender, housekeeping],
    sensors=[build_kafka_sensor(), build_sessions_sensor(), slack_on_run_failure],
    schedules=[daily_retraining, daily_housekeeping],
    resources=resources,
)
