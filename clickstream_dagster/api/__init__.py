"""The recommendations API (FastAPI): `create_app(database_url)`; run it with
`python -m clickstream_dagster.api --host 127.0.0.1 --port 8000`."""

from clickstream_dagster.api.app import create_app

__all__ = ["create_app"]
