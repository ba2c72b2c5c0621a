"""The whole pipeline at a glance: every asset, check, sensor, schedule and resource is listed here."""

import dagster as dg

from clickstream_dagster.resources import KafkaResource, PostgresResource, SlackResource, SparkResource
from clickstream_dagster.sensors.alerts import slack_on_run_failure

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
    assets=[],
    asset_checks=[],
    sensors=[slack_on_run_failure],
    schedules=[],
    resources=resources,
)
