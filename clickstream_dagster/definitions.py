"""The whole pipeline at a glance: every asset, check, sensor, schedule and resource is listed here."""

import dagster as dg

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.ingestion import live_clickstream_events, raw_events, raw_events_checks
from clickstream_dagster.assets.reference import category_tree, item_properties, items
from clickstream_dagster.resources import KafkaResource, PostgresResource, SlackResource, SparkResource
from clickstream_dagster.sensors.alerts import slack_on_run_failure
from clickstream_dagster.sensors.kafka import INGEST_JOB_NAME, build_kafka_sensor

# Kafka -> raw_events -> {live_clickstream_events, windowed_stats, event_statistics}, one run per offset batch.
# In-process: a run is a few small steps, and a fresh step process would cost more than the step itself.
reference_data = dg.define_asset_job(
    "reference_data",
    selection=[category_tree, item_properties, items],
    executor_def=dg.in_process_executor,
    description="Load category_tree.csv and item_properties_part1/2.csv and derive each item's current state",
)

ingest_events = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=[raw_events, live_clickstream_events, windowed_stats, event_statistics],
    executor_def=dg.in_process_executor,
    description="Ingest an exact set of Kafka offset ranges and refresh everything computed from them",
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
        # reference
        category_tree,
        item_properties,
        items,
    ],
    asset_checks=[*raw_events_checks],
    jobs=[ingest_events, reference_data],
    sensors=[build_kafka_sensor(), slack_on_run_failure],
    schedules=[],
    resources=resources,
)
