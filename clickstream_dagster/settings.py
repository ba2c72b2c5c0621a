"""The library's settings: which endpoints to use, read from the environment, and the URL helpers around them.

Everything is read when `Settings.from_env()` is called, never at import time. The three endpoints
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `SPARK_REMOTE`) default to the addresses the local stack serves
(`clickstream up`); set one to use an existing engine instead. The local stack (`clickstream_dagster.stack`)
extends these settings with its folders and process management; nothing in the library imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_TOPIC = "clickstream"
EVENTS_DATABASE = "clickstream"
DAGSTER_DATABASE = "dagster"


def project_root() -> Path:
    """The checkout this package runs from (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").is_file() and (here / "clickstream_dagster").is_dir():
        return here
    return Path.cwd()


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Downloaded jars and generated data (CLICKSTREAM_CACHE_DIR, default .cache/ in the project)."""
    env = os.environ if env is None else env
    return Path(env.get("CLICKSTREAM_CACHE_DIR") or project_root() / ".cache").resolve()


def models_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where models are exported as .pkl (CLICKSTREAM_MODELS_DIR, default models/ in the project)."""
    env = os.environ if env is None else env
    return Path(env.get("CLICKSTREAM_MODELS_DIR") or project_root() / "models")


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    postgres: int = 5433
    dagster: int = 3000
    spark_connect: int = 15002
    api: int = 8000
    dashboard: int = 8501
    dagster_code_server: int = 4266
    exporter: int = 9400  # the pipeline's Prometheus metrics (monitoring/)
    prometheus: int = 9090
    producer_metrics: int = 9401  # the producer's Prometheus metrics during `clickstream demo`
    alertmanager: int = 9095  # Alertmanager (its upstream default, 9093, is the Kafka controller's here)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        defaults = cls()
        return cls(**{name: int(env.get(var) or getattr(defaults, name)) for name, var in PORT_ENV.items()})

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` give these ports (for a child process of a test stack)."""
        return {var: str(getattr(self, name)) for name, var in PORT_ENV.items()}


# Each port's environment variable.
PORT_ENV = {
    "kafka": "CLICKSTREAM_KAFKA_PORT",
    "kafka_controller": "CLICKSTREAM_KAFKA_CONTROLLER_PORT",
    "postgres": "CLICKSTREAM_POSTGRES_PORT",
    "dagster": "CLICKSTREAM_DAGSTER_PORT",
    "spark_connect": "CLICKSTREAM_SPARK_CONNECT_PORT",
    "api": "CLICKSTREAM_API_PORT",
    "dashboard": "CLICKSTREAM_DASHBOARD_PORT",
    "dagster_code_server": "CLICKSTREAM_DAGSTER_CODE_SERVER_PORT",
    "exporter": "CLICKSTREAM_EXPORTER_PORT",
    "prometheus": "CLICKSTREAM_PROMETHEUS_PORT",
    "producer_metrics": "CLICKSTREAM_PRODUCER_METRICS_PORT",
    "alertmanager": "CLICKSTREAM_ALERTMANAGER_PORT",
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Endpoints and names: each external endpoint given in the environment replaces the local default."""

    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    external_kafka: str | None = None
    external_database_url: str | None = None
    external_dagster_database_url: str | None = None
    external_spark_remote: str | None = None
    external_dagster_url: str | None = None
    slack_webhook_url: str | None = None
    topic: str = DEFAULT_TOPIC
    kafka_partitions: int = 3
    kafka_replication_factor: int = 1  # of the events topic when `up` creates it (3 on a 3-broker cluster)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            ports=Ports.from_env(env),
            external_kafka=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            external_database_url=env.get("DATABASE_URL") or None,
            external_dagster_database_url=env.get("DAGSTER_DATABASE_URL") or None,
            external_spark_remote=env.get("SPARK_REMOTE") or None,
            external_dagster_url=env.get("CLICKSTREAM_DAGSTER_URL") or None,
            slack_webhook_url=env.get("SLACK_WEBHOOK_URL") or None,
            topic=env.get("CLICKSTREAM_TOPIC") or DEFAULT_TOPIC,
            kafka_partitions=int(env.get("CLICKSTREAM_KAFKA_PARTITIONS", 3)),
            kafka_replication_factor=int(env.get("CLICKSTREAM_KAFKA_REPLICATION_FACTOR", 1)),
        )

    @property
    def bootstrap_servers(self) -> str:
        return self.external_kafka or f"{self.host}:{self.ports.kafka}"

    @property
    def database_url(self) -> str:
        """libpq URL of the events database (psycopg 3 and the API use it)."""
        if self.external_database_url:
            return self.external_database_url
        return f"postgresql://postgres@{self.host}:{self.ports.postgres}/{EVENTS_DATABASE}"

    @property
    def dagster_database_url(self) -> str:
        """SQLAlchemy URL of Dagster's own storage; psycopg2 driver is explicit (SQLAlchemy 2.1 trap)."""
        url = self.external_dagster_database_url or with_database(self.database_url, DAGSTER_DATABASE)
        return sqlalchemy_psycopg2_url(url)

    @property
    def spark_remote(self) -> str:
        """Spark Connect URL: the external one, or the embedded server `up` starts."""
        return self.external_spark_remote or f"sc://{self.host}:{self.ports.spark_connect}"

    @property
    def dagster_url(self) -> str:
        """Dagster's webserver (its UI and GraphQL endpoint)."""
        return self.external_dagster_url or f"http://{self.host}:{self.ports.dagster}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports.api}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ports.dashboard}"


def env_number(name: str, default: float, unit: str, env: Mapping[str, str] | None = None) -> float:
    """A number setting from the environment (`default` when unset or empty); ValueError naming the variable
    and its unit when it is not a number. Each setting checks its own range."""
    env = os.environ if env is None else env
    raw = env.get(name) or ""
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of {unit}") from None


def settings_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of `Settings` read from `env`, for subclasses that add their own."""
    settings = Settings.from_env(env)
    return {f.name: getattr(settings, f.name) for f in fields(Settings)}


# ---- URLs --------------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs: `postgresql://user@host/db`.

    A URL without credentials, or one that is not a URL at all, comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    creds, at, host = netloc.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}{slash}{tail}"


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def sqlalchemy_psycopg2_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {redact_url(url)!r}")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return "postgresql+psycopg2://" + rest
    raise ValueError(f"unsupported database URL scheme {scheme!r}: expected postgresql://")


def libpq_url(url: str) -> str:
    """Strip an SQLAlchemy driver suffix so psycopg can use the URL."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    if scheme == "postgres":
        return "postgresql://" + rest
    return url
