"""The recommendations API (FastAPI): `create_app(database_url)`; run it with
`python -m clickstream_dagster.api --host 127.0.0.1 --port 8000`.

`create_app` is imported on first use, so the pure modules (api.session: the live-session rules and the
blend) load without FastAPI (bench/api.py's raw ASGI peer runs them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clickstream_dagster.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from clickstream_dagster.api import app

        return app.create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
