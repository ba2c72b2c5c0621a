"""The whole pipeline at a glance: every asset, check, sensor, schedule and resource is listed here."""

import dagster as dg

from clickstream_dagster.resources import KafkaResource, PostgresResource, SlackResource, SparkResource

resources = {
    "kafka": KafkaResource(
        bootstrap_servers=dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS"),
        topic=dg.EnvVar("CLICKSTREAM_TOPIC"),
    ),
    "postgres": PostgresResource(url=dg.EnvVar("DATABASE_URL")),
    "spark": SparkResource(remote=dg.EnvVar("SPARK_REMOTE")),
    "slack": SlackResource(webhook_url=dg.EnvVar("SLACK_WEBHOOK_URL")),
}

defs = dg.Definitions(
    assets=[],
    asset_checks=[],
    sensors=[],
    schedules=[],
    resources=resources,
)
