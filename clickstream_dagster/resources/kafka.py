"""Apache Kafka: the resource's settings build the library's `KafkaClient`, which does the work."""

from __future__ import annotations

import dagster as dg

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.settings import DEFAULT_TOPIC


class KafkaResource(dg.ConfigurableResource):
    """The event topic's connection settings; `get_client()` gives assets and sensors a `KafkaClient`."""

    bootstrap_servers: str
    topic: str = DEFAULT_TOPIC
    client_id: str = "clickstream-dagster"
    request_timeout_ms: int = 10_000

    @classmethod
    def for_client(cls, client: KafkaClient) -> KafkaResource:
        return cls(
            bootstrap_servers=client.bootstrap_servers,
            topic=client.topic,
            client_id=client.client_id,
            request_timeout_ms=client.request_timeout_ms,
        )

    def get_client(self) -> KafkaClient:
        return KafkaClient(
            bootstrap_servers=self.bootstrap_servers,
            topic=self.topic,
            client_id=self.client_id,
            request_timeout_ms=self.request_timeout_ms,
        )
