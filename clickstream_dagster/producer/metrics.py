"""Prometheus metrics of the producer (standard naming: *_total counters, *_seconds histograms)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class ProducerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sent = Counter(
            "clickstream_producer_messages_sent_total", "Messages acknowledged by Kafka", registry=r
        )
        self.failed = Counter(
            "clickstream_producer_send_failures_total", "Messages Kafka did not acknowledge", registry=r
        )
        self.rejected = Counter(
            "clickstream_producer_rows_rejected_total",
            "CSV rows rejected before sending, by reason kind",
            ["reason"],
            registry=r,
        )
        self.read = Counter("clickstream_producer_rows_read_total", "CSV data rows read", registry=r)
        self.latency = Histogram(
            "clickstream_producer_send_latency_seconds",
            "Time from send() to broker acknowledgement (sampled)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.rate = Gauge(
            "clickstream_producer_rate_messages_per_second",
            "Acknowledged messages per second (last interval)",
            registry=r,
        )
        self.buffer_depth = Gauge(
            "clickstream_producer_buffer_depth_messages", "Messages sent but not yet acknowledged", registry=r
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
