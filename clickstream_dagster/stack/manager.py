"""`clickstream up | down | status`: the whole local stack, each part skipped when an external endpoint is set."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.settings import redact_url
from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import EVENTS_DATABASE, StackConfig
from clickstream_dagster.stack.dagster import DagsterServices
from clickstream_dagster.stack.kafka import EmbeddedKafka
from clickstream_dagster.stack.monitoring import (
    MonitoringServices,
    alertmanager_binary,
    prometheus_binary,
)
from clickstream_dagster.stack.postgres import EmbeddedPostgres, ensure_database
from clickstream_dagster.stack.process import StackError
from clickstream_dagster.stack.spark import EmbeddedSparkConnect
from clickstream_dagster.stack.web import WebServices

Log = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    state: str  # healthy | unhealthy | stopped | external | not installed (an optional part)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("healthy", "external", "not installed")


class Stack:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.postgres = EmbeddedPostgres(cfg)
        self.kafka = EmbeddedKafka(cfg)
        self.spark = EmbeddedSparkConnect(cfg)
        self.dagster = DagsterServices(cfg)
        self.web = WebServices(cfg)
        self.monitoring = MonitoringServices(cfg)

    def _timed(self, log: Log, what: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        log(f"  {what} ...")
        step()
        log(f"  {what}: ready in {time.monotonic() - started:.1f} s")

    def up_data_services(self, log: Log = print) -> None:
        """Postgres (with migrations) and Kafka (with the event topic): what tests and the producer need."""
        cfg = self.cfg
        if cfg.external_database_url:
            log(f"  PostgreSQL: external ({redact_url(cfg.database_url)}), not started")
        else:
            self._timed(log, f"PostgreSQL on {cfg.host}:{cfg.ports.postgres}", self.postgres.start)
            ensure_database(cfg.database_url, EVENTS_DATABASE)
        applied = apply_migrations(cfg.database_url)
        log(f"  schema: {len(applied)} migration(s) applied" if applied else "  schema: up to date")
        if cfg.external_kafka:
            log(f"  Kafka: external ({cfg.external_kafka}), not started")
        else:
            self._timed(log, f"Apache Kafka (KRaft) on {cfg.bootstrap_servers}", self.kafka.start)
        created = KafkaClient(bootstrap_servers=cfg.bootstrap_servers).ensure_topic(
            cfg.topic, partitions=cfg.kafka_partitions, replication_factor=cfg.kafka_replication_factor
        )
        if created:
            log(
                f"  topic `{cfg.topic}` created with {cfg.kafka_partitions} partitions, replication factor "
                f"{cfg.kafka_replication_factor}"
            )

    def up(self, log: Log = print) -> None:
        self.up_data_services(log)
        if self.cfg.external_spark_remote:
            log(f"  Spark: external ({self.cfg.external_spark_remote}), not started")
        else:
            self._timed(log, f"Spark Connect on {self.spark.endpoint}", self.spark.start)
        self._timed(log, f"Dagster webserver + daemon on {self.cfg.dagster_url}", self.dagster.start)
        self._timed(
            log,
            f"API on {self.cfg.api_url} + dashboard on {self.cfg.dashboard_url}",
            self.web.start,
        )
        notes: list[str] = []
        mon = self.monitoring
        self._timed(
            log,
            f"pipeline exporter on {mon.exporter_url} + Prometheus on {mon.prometheus_url} + Alertmanager on "
            f"{mon.alertmanager_url}",
            lambda: notes.extend(mon.start()),
        )
        for note in notes:
            log(f"  {note}")
        if alertmanager_binary() is not None and not mon.routing:
            log("  alert routing off: set SLACK_WEBHOOK_URL (then `make down` and `make up`) to post alerts")

    def down(self, log: Log = print) -> None:
        for name in [*self.monitoring.stop(), *self.web.stop(), *self.dagster.stop()]:
            log(f"  stopped {name}")
        if self.spark.stop():
            log("  stopped spark-connect")
        if self.kafka.stop():
            log("  stopped kafka")
        if self.postgres.stop():
            log("  stopped postgres")

    def status(self) -> list[ComponentStatus]:
        cfg = self.cfg
        out = []
        if cfg.external_database_url:
            out.append(ComponentStatus("postgres", redact_url(cfg.database_url), "external"))
        else:
            pg_address = f"{cfg.host}:{cfg.ports.postgres}"
            pg_state = (
                "healthy"
                if self.postgres.healthy()
                else ("unhealthy" if self.postgres.running() else "stopped")
            )
            out.append(ComponentStatus("postgres", pg_address, pg_state, str(cfg.postgres_data_dir)))
        if cfg.external_kafka:
            out.append(ComponentStatus("kafka", cfg.external_kafka, "external"))
        else:
            k_state = (
                "healthy"
                if self.kafka.healthy()
                else ("unhealthy" if self.kafka.proc.running() else "stopped")
            )
            out.append(
                ComponentStatus(
                    "kafka", cfg.bootstrap_servers, k_state, f"pid {self.kafka.proc.pid() or '-'}"
                )
            )
        if cfg.external_spark_remote:
            out.append(ComponentStatus("spark-connect", cfg.external_spark_remote, "external"))
        else:
            sc_running = self.spark.proc.running()
            sc_state = "healthy" if self.spark.healthy() else ("unhealthy" if sc_running else "stopped")
            out.append(
                ComponentStatus(
                    "spark-connect", self.spark.endpoint, sc_state, f"pid {self.spark.proc.pid() or '-'}"
                )
            )
        health = self.dagster.health() if self.dagster.webserver.running() else {}
        web_state = (
            "healthy"
            if health.get("location_loaded")
            else ("unhealthy" if self.dagster.webserver.running() else "stopped")
        )
        locations = ", ".join(health.get("locations", {})) or "-"
        out.append(
            ComponentStatus("dagster-webserver", cfg.dagster_url, web_state, f"code locations: {locations}")
        )
        daemon_running = self.dagster.daemon.running()
        daemon_state = (
            "healthy" if health.get("daemon_healthy") else ("unhealthy" if daemon_running else "stopped")
        )
        daemons = (
            ", ".join(f"{k}={'ok' if v else 'down'}" for k, v in health.get("daemons", {}).items()) or "-"
        )
        out.append(
            ComponentStatus(
                "dagster-daemon", f"pid {self.dagster.daemon.pid() or '-'}", daemon_state, daemons
            )
        )
        out.extend(self._serving_status())
        return out

    def _serving_status(self) -> list[ComponentStatus]:
        cfg = self.cfg
        api = self.web.api_health() if self.web.api.running() else None
        if api is None:
            api_state, api_detail = ("unhealthy" if self.web.api.running() else "stopped"), ""
        else:
            api_state = "healthy"
            model = api.get("model_version")
            if model:
                api_detail = f"model v{model}"
            elif api.get("status") == "ok":
                api_detail = f"popular lists: {api.get('detail', '')}"
            else:
                api_detail = f"no promoted model yet ({api.get('status', '?')})"
        dash_running = self.web.dashboard.running()
        dash_state = (
            "healthy"
            if dash_running and self.web.dashboard_healthy()
            else ("unhealthy" if dash_running else "stopped")
        )
        mon = self.monitoring
        exporter_state = (
            "healthy" if mon.exporter_healthy() else ("unhealthy" if mon.exporter.running() else "stopped")
        )
        if mon.prometheus.running():
            prom_state, prom_detail = ("healthy" if mon.prometheus_healthy() else "unhealthy"), ""
        elif prometheus_binary():
            prom_state, prom_detail = "stopped", ""
        else:
            prom_state, prom_detail = "not installed", "optional: `apt-get install prometheus`"
        routing = (
            "routing to Slack: on (SLACK_WEBHOOK_URL)"
            if mon.routing
            else "routing: off (SLACK_WEBHOOK_URL unset)"
        )
        if mon.alertmanager.running():
            am_state = "healthy" if mon.alertmanager_healthy() else "unhealthy"
        elif alertmanager_binary():
            am_state = "stopped"
        else:
            am_state, routing = "not installed", "optional: `apt-get install prometheus-alertmanager`"
        return [
            ComponentStatus("api", cfg.api_url, api_state, api_detail),
            ComponentStatus("dashboard", cfg.dashboard_url, dash_state),
            ComponentStatus("exporter", f"{mon.exporter_url}/metrics", exporter_state),
            ComponentStatus("prometheus", mon.prometheus_url, prom_state, prom_detail),
            ComponentStatus("alertmanager", mon.alertmanager_url, am_state, routing),
        ]

    def require_healthy(self) -> None:
        bad = [s for s in self.status() if not s.ok]
        if bad:
            names = ", ".join(f"{s.name} ({s.state})" for s in bad)
            raise StackError(f"not healthy: {names}; see `clickstream status` and .data/logs/")
