"""The stack's web processes: the FastAPI recommendations service and the Streamlit dashboard.

Both read PostgreSQL only, so they start whether or not the ML job has run yet; the API's /health says what
it serves (503 until the ML job has written a model's or the popular lists' rows) and the dashboard shows
empty states.
"""

from __future__ import annotations

import os
import sys

import httpx

from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.process import ManagedProcess, ensure_port_free, wait_until


class WebServices:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.api = ManagedProcess("api", cfg.run_dir, cfg.log_dir)
        self.dashboard = ManagedProcess("dashboard", cfg.run_dir, cfg.log_dir)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.cfg.service_env()}

    def start(self, timeout: float = 60.0) -> None:
        cfg = self.cfg
        if not self.api.running():
            ensure_port_free(cfg.host, cfg.ports.api, "the recommendations API", "CLICKSTREAM_API_PORT")
            self.api.start(
                [
                    sys.executable,
                    "-m",
                    "clickstream_dagster.api",
                    "--host",
                    cfg.host,
                    "--port",
                    str(cfg.ports.api),
                ],
                self.env(),
                cwd=cfg.root,
            )
        if not self.dashboard.running():
            ensure_port_free(cfg.host, cfg.ports.dashboard, "the dashboard", "CLICKSTREAM_DASHBOARD_PORT")
            self.dashboard.start(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    str(cfg.root / "dashboards" / "app.py"),
                    "--server.headless",
                    "true",
                    "--server.address",
                    cfg.host,
                    "--server.port",
                    str(cfg.ports.dashboard),
                    "--browser.gatherUsageStats",
                    "false",
                ],
                self.env(),
                cwd=cfg.root,
            )
        wait_until(self.api_answers, timeout, "recommendations API", self.api.running, self.api.log_tail)
        wait_until(
            self.dashboard_healthy, timeout, "dashboard", self.dashboard.running, self.dashboard.log_tail
        )

    def api_health(self) -> dict[str, object] | None:
        """The API's /health body (200 ready, 503 up but not ready), None when it does not answer."""
        try:
            response = httpx.get(f"{self.cfg.api_url}/health", timeout=2)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else {"status": response.status_code}

    def api_answers(self) -> bool:
        return self.api_health() is not None

    def dashboard_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.cfg.dashboard_url}/_stcore/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> list[str]:
        return [p.name for p in (self.dashboard, self.api) if p.stop(timeout=10)]
