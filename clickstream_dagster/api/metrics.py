"""Prometheus metrics of one app instance (its own registry, so several apps in one process never clash).

Requests are labelled by route template (`/recommendations/{user_id}`), never by raw path, so the label set
stays bounded whatever ids clients send; a path that matches no route counts as `unmatched`.

With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR (which `python -m clickstream_dagster.api --workers N`
sets) makes every worker write its values there and /metrics report the sum over all workers.
"""

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Fine below 50 ms, where the service's target (p99 <= 20 ms) lives.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "clickstream_api_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clickstream_api_request_duration_seconds",
            "Time from request to the end of the response, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.recommendation_source = Counter(
            "clickstream_api_recommendations",
            "Recommendation answers by source: session (led by the live session's neighbours), model (the "
            "visitor's own list) or popular (fallback).",
            ["source"],
            registry=self.registry,
        )
        self.answers_bytes = Gauge(
            "clickstream_api_model_answers_bytes",
            "Memory held by the served model's lists (recommendations and similar items), in bytes.",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "clickstream_api_model_version",
            "The model version being served (0 when none can be).",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def scrape(self) -> bytes:
        """The text exposition: this process's registry, or every worker's values in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body buffering, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children, looked up once per label set (labels() costs a lock and a dict build per call).
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._paths: dict[
            Any, str
        ] = {}  # endpoint -> route template, for routes that do not set scope["route"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The router stores the matched route in the (shared) scope: FastAPI's own routes as "route";
            # plain Starlette routes (/openapi.json, /docs, /redoc) only as their "endpoint".
            route = getattr(scope.get("route"), "path", None) or self._path_of(scope)
            method = scope["method"]
            latency = self._latency.get((route, method))
            if latency is None:
                latency = self._latency[route, method] = self.metrics.latency.labels(route, method)
            latency.observe(time.perf_counter() - started)
            requests = self._requests.get((route, method, status))
            if requests is None:
                requests = self.metrics.requests.labels(route, method, str(status))
                self._requests[route, method, status] = requests
            requests.inc()

    def _path_of(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        path = self._paths.get(endpoint)
        if path is None:
            routes = getattr(scope.get("app"), "routes", ())
            path = next((r.path for r in routes if getattr(r, "endpoint", None) is endpoint), "unmatched")
            self._paths[endpoint] = path
        return path
