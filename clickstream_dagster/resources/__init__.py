"""The Dagster wiring's resources: one ConfigurableResource per external system (the Kafka and Spark ones hand out
the library's clients, `clickstream_dagster.clients`)."""

from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.resources.postgres import PostgresResource
from clickstream_dagster.resources.slack import SlackResource
from clickstream_dagster.resources.spark import SparkResource

__all__ = ["KafkaResource", "PostgresResource", "SlackResource", "SparkResource"]
