"""One ConfigurableResource per external system."""

from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.resources.postgres import PostgresResource
from clickstream_dagster.resources.slack import SlackResource
from clickstream_dagster.resources.spark import SparkResource

__all__ = ["KafkaResource", "PostgresResource", "SlackResource", "SparkResource"]
