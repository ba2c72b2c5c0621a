"""`python -m clickstream_dagster.monitoring [--host H] [--port P] [--interval S]`: the pipeline's Prometheus
exporter. Reads DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, CLICKSTREAM_TOPIC and CLICKSTREAM_DAGSTER_URL (else the
embedded stack's defaults); answers /metrics."""

import argparse
import logging
import threading

from clickstream_dagster.logs import configure_logging
from clickstream_dagster.monitoring.exporter import PipelineExporter
from clickstream_dagster.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m clickstream_dagster.monitoring", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument(
        "--port", type=int, default=settings.ports.exporter, help="default: CLICKSTREAM_EXPORTER_PORT or 9400"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default: 5)")
    args = parser.parse_args()
    configure_logging(service="exporter")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll otherwise
    exporter = PipelineExporter(
        settings.database_url, settings.bootstrap_servers, settings.dagster_url, topics=[settings.topic]
    )
    exporter.serve(args.port, args.host, args.interval)
    logging.getLogger(__name__).info(
        "pipeline metrics on http://%s:%d/metrics, polling every %.0f s", args.host, args.port, args.interval
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
