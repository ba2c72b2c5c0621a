"""Dagster's webserver through its public GraphQL API (`<url>/graphql`), with plain HTTP: the one client the
dashboard and the pipeline exporter share (no Dagster import; the queries are in `dagster_queries`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from clickstream_dagster.settings import redact_url

UNREACHABLE_HINT = (
    "start Dagster with `make up` (or `clickstream up`), or set CLICKSTREAM_DAGSTER_URL to its webserver"
)


class DagsterError(RuntimeError):
    """Dagster's webserver gave no usable answer; the message says why and what to do."""


class WebserverUnavailable(DagsterError):
    """The webserver did not answer at all."""


class DagsterWebserver:
    """Dagster's webserver, read through its public GraphQL endpoint (`<url>/graphql`) with plain HTTP.

    When it does not answer, callers are told so at once for `retry_after_s` instead of waiting for the
    connect timeout on every call. GraphQL errors (a query the server rejects, a
    PythonError from its storage) become a `DagsterError` with the server's message."""

    what = "Dagster webserver"

    def __init__(
        self,
        url: str,
        *,
        unreachable_hint: str = UNREACHABLE_HINT,
        user_agent: str = "clickstream-dagster",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 20.0,
        retry_after_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.unreachable_hint = unreachable_hint
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            headers={"User-Agent": user_agent},
        )
        self._lock = threading.Lock()
        self._down: tuple[float, WebserverUnavailable] | None = None

    @property
    def address(self) -> str:
        return redact_url(self.url)

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def _unavailable(self, reason: str) -> WebserverUnavailable:
        err = WebserverUnavailable(
            f"{self.what} not reachable at {self.address} ({reason}): {self.unreachable_hint}."
        )
        with self._lock:
            self._down = (time.monotonic() + self.retry_after_s, err)
        return err

    def query(self, document: str, variables: Mapping[str, object] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL query; raises `DagsterError` when there is none to use."""
        with self._lock:
            down = self._down
        if down is not None and time.monotonic() < down[0]:
            raise down[1]
        try:
            response = self._client.post(
                self.graphql_url, json={"query": document, "variables": dict(variables or {})}
            )
        except httpx.ConnectTimeout:
            raise self._unavailable(f"no connection within {self.connect_timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise self._unavailable(f"no answer within {self.read_timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise self._unavailable(str(exc) or type(exc).__name__) from None
        with self._lock:
            self._down = None
        try:
            body = response.json()
        except ValueError:
            body = None
        return graphql_data(body, response.status_code, self.address)

    def close(self) -> None:
        self._client.close()


def _first_line(text: object, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def graphql_data(body: object, status: int, address: str) -> dict[str, Any]:
    """The `data` of a GraphQL response body, or a `DagsterError` naming the first error."""
    if not isinstance(body, Mapping):
        raise DagsterError(
            f"{DagsterWebserver.what} at {address} answered HTTP {status} without a GraphQL response: "
            "is CLICKSTREAM_DAGSTER_URL the address of Dagster's webserver?"
        )
    problems = body.get("errors")
    if problems:
        first = problems[0] if isinstance(problems, list) and isinstance(problems[0], Mapping) else {}
        path = ".".join(str(p) for p in first.get("path") or [])
        raise DagsterError(
            f"{DagsterWebserver.what} at {address} could not answer the query"
            f"{f' ({path})' if path else ''}: {_first_line(first.get('message', problems))}"
        )
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise DagsterError(f"{DagsterWebserver.what} at {address} answered HTTP {status} without data.")
    return dict(data)


def graphql_result(
    data: Mapping[str, Any], field: str, typename: str, address: str, *, absent: str | None = None
) -> Mapping[str, Any] | None:
    """A union field of `data` that must be `typename` (None when it is `absent`, e.g. AssetNotFoundError);
    an error member (PythonError, ...) becomes a `DagsterError` with its message."""
    result = data.get(field)
    kind = result.get("__typename") if isinstance(result, Mapping) else None
    if kind == typename and isinstance(result, Mapping):
        return result
    if absent is not None and kind == absent:
        return None
    message = result.get("message") if isinstance(result, Mapping) else None
    raise DagsterError(
        f"{DagsterWebserver.what} at {address} answered `{field}` with {kind or 'nothing'}"
        f"{f': {_first_line(message)}' if message else ''}."
    )
