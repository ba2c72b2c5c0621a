"""Dagster for the local stack: one code server, the webserver and the daemon, with run/event/schedule storage
in PostgreSQL.

The webserver and the daemon load the code location from one long-lived code server (`dagster code-server
start`, the gRPC server production deployments run) instead of each spawning their own: the daemon otherwise
replaces its code server every 60 s (a fresh process importing the whole code location, measured with py-spy
as a large part of the daemon tree's CPU during a full replay). "Reload" in the UI restarts the server's code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from clickstream_dagster.logs import log_format
from clickstream_dagster.settings import env_number
from clickstream_dagster.stack.config import DAGSTER_DATABASE, StackConfig, libpq_url
from clickstream_dagster.stack.postgres import ensure_database
from clickstream_dagster.stack.process import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    port_open,
    wait_until,
)

# Launch runs immediately (no queue polling) and keep sensor ticks threaded: measured on these machines,
# request-to-first-step drops from ~5 s (queued coordinator) to ~1.5 s. Runs fork from a process that has
# imported Dagster and the code location once (ForkingRunLauncher). A failed run is retried with the same
# config (ingestion is idempotent, so a retry only fills in what is missing). Storage keeps its PostgreSQL
# connections open in every process (PooledPostgresStorage) instead of connecting once per call.
INSTANCE_YAML = """\
# Written by `clickstream up`; edits are overwritten.
storage:
  custom:
    module: clickstream_dagster.stack.storage
    class: PooledPostgresStorage
    config:
      postgres_url: {url}
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: clickstream_dagster.stack.run_launcher
  class: ForkingRunLauncher
  config:
    preload_modules: [clickstream_dagster.definitions, pyspark.sql.connect.session]
sensors:
  use_threads: true
  num_workers: 4
schedules:
  use_threads: true
  num_workers: 2
run_retries:
  enabled: true
  max_retries: 2
# A run that never leaves STARTING (its worker died before it started, e.g. while PostgreSQL restarted) is
# failed after this long, so the retries and the sensor's gap repairs take its ranges again; without it the
# run counted as in flight for good and its offsets were never ingested (CI, fault tests).
run_monitoring:
  enabled: true
  start_timeout_seconds: {start_timeout}
  poll_interval_seconds: 10
# Ticks: a sensor ticks every 5 s. Skipped ticks go after a day, the others after a week (failed: a month);
# old runs go by the housekeeping job.
retention:
  sensor:
    purge_after_days:
      skipped: 1
      success: 7
      started: 7
      failure: 30
  schedule:
    purge_after_days: 90
python_logs:
  # The ML library logs each training step (cleaning, grid, epochs, evaluation) to the run's log.
  managed_python_loggers:
    - clickstream_dagster.ml
  python_log_level: INFO
{handlers}telemetry:
  enabled: false
"""

START_TIMEOUT_ENV = "CLICKSTREAM_RUN_START_TIMEOUT_SECONDS"
DEFAULT_START_TIMEOUT_S = 120.0

# With CLICKSTREAM_LOG_FORMAT=json, every record of a run (Dagster's and the managed loggers') is also written
# to the run process's stderr as one JSON object per line (clickstream_dagster.logs).
JSON_RUN_LOGS = """\
  dagster_handler_config:
    handlers:
      json:
        class: logging.StreamHandler
        formatter: json
    formatters:
      json:
        (): clickstream_dagster.logs.JsonFormatter
        service: dagster-run
"""

# The workspace the webserver and the daemon load: the stack's code server (the repository's workspace.yaml,
# for `dagster dev`, loads the module directly).
WORKSPACE_YAML = """\
# Written by `clickstream up`; edits are overwritten.
load_from:
  - grpc_server:
      host: {host}
      port: {port}
      location_name: {location}
"""
LOCATION_NAME = "clickstream_dagster"
DEFINITIONS_MODULE = "clickstream_dagster.definitions"

HEALTH_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


def _script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class DagsterServices:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.code_server = ManagedProcess("dagster-code-server", cfg.run_dir, cfg.log_dir)
        self.webserver = ManagedProcess("dagster-webserver", cfg.run_dir, cfg.log_dir)
        self.daemon = ManagedProcess("dagster-daemon", cfg.run_dir, cfg.log_dir)

    @property
    def workspace(self) -> Path:
        return self.cfg.dagster_home / "workspace.yaml"

    def prepare_instance(self) -> None:
        home = self.cfg.dagster_home
        home.mkdir(parents=True, exist_ok=True)
        url = self.cfg.dagster_database_url
        if not self.cfg.external_dagster_database_url:
            try:
                ensure_database(libpq_url(url), DAGSTER_DATABASE)
            except Exception as exc:
                raise StackError(
                    f"could not create the `{DAGSTER_DATABASE}` database for Dagster's storage ({exc}); "
                    "create it yourself or set DAGSTER_DATABASE_URL"
                ) from exc
        handlers = JSON_RUN_LOGS if log_format() == "json" else ""
        start_timeout = round(env_number(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_S, "seconds"))
        if start_timeout < 10:
            raise StackError(f"{START_TIMEOUT_ENV}={start_timeout}: at least 10 seconds")
        (home / "dagster.yaml").write_text(
            INSTANCE_YAML.format(url=json.dumps(url), handlers=handlers, start_timeout=start_timeout)
        )
        self.workspace.write_text(
            WORKSPACE_YAML.format(
                host=self.cfg.host, port=self.cfg.ports.dagster_code_server, location=LOCATION_NAME
            )
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.cfg.service_env()}

    def _start_server(
        self, process: ManagedProcess, port: int, what: str, port_env: str, args: list[str], script: str
    ) -> None:
        """Start a process that listens on `port` (on the stack's host), unless it is running already."""
        if process.running():
            return
        ensure_port_free(self.cfg.host, port, what, port_env)
        process.start(
            [_script(script), *args, "-h", self.cfg.host, "-p", str(port)], self.env(), cwd=self.cfg.root
        )

    def start(self, timeout: float = 120.0) -> None:
        self.prepare_instance()
        self._start_server(
            self.code_server,
            self.cfg.ports.dagster_code_server,
            "the Dagster code server",
            "CLICKSTREAM_DAGSTER_CODE_SERVER_PORT",
            ["code-server", "start", "-m", DEFINITIONS_MODULE, "--location-name", LOCATION_NAME],
            "dagster",
        )
        # The webserver and the daemon load the location once at start: the server must answer first.
        wait_until(
            lambda: port_open(self.cfg.host, self.cfg.ports.dagster_code_server),
            timeout,
            "Dagster code server",
            self.code_server.running,
            lambda: self.code_server.log_tail(40),
        )
        self._start_server(
            self.webserver,
            self.cfg.ports.dagster,
            "the Dagster webserver",
            "CLICKSTREAM_DAGSTER_PORT",
            ["-w", str(self.workspace)],
            "dagster-webserver",
        )
        if not self.daemon.running():
            self.daemon.start(
                [_script("dagster-daemon"), "run", "-w", str(self.workspace)], self.env(), cwd=self.cfg.root
            )
        wait_until(
            self.webserver_ready,
            timeout,
            "Dagster webserver",
            self.webserver.running,
            lambda: self.webserver.log_tail(40),
        )
        wait_until(
            lambda: self.health().get("location_loaded", False),
            timeout,
            "Dagster code location",
            self.webserver.running,
            lambda: json.dumps(self.health(), indent=2) + "\n" + self.webserver.log_tail(40),
        )
        wait_until(
            lambda: self.health().get("daemon_healthy", False),
            timeout,
            "Dagster daemon",
            self.daemon.running,
            lambda: self.daemon.log_tail(40),
            interval=1.0,
        )

    def webserver_ready(self) -> bool:
        try:
            return httpx.get(f"{self.cfg.dagster_url}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        """Code location and daemon health as the webserver reports them."""
        try:
            response = httpx.post(f"{self.cfg.dagster_url}/graphql", json={"query": HEALTH_QUERY}, timeout=5)
            body = response.json()
            data = body["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {"webserver": False}
        if not data:  # the webserver answers, but not yet (e.g. its storage reconnecting): errors, no data
            return {
                "webserver": True,
                "location_loaded": False,
                "daemon_healthy": False,
                "errors": body.get("errors"),
            }
        entries = data["workspaceOrError"].get("locationEntries", [])
        locations = {
            e["name"]: (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        }
        errors = [
            e["locationOrLoadError"].get("message", "")
            for e in entries
            if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"
        ]
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [d for d in daemons if d["required"]]
        return {
            "webserver": True,
            "locations": locations,
            "location_loaded": bool(locations) and all(locations.values()),
            "location_errors": errors,
            "daemon_healthy": bool(required) and all(d["healthy"] for d in required),
            "daemons": {d["daemonType"]: d["healthy"] for d in required},
        }

    def stop(self) -> list[str]:
        stopped = []
        for proc in (self.daemon, self.webserver, self.code_server):
            if proc.stop(timeout=20):
                stopped.append(proc.name)
        return stopped
