"""A real small model and a live API: generated events -> LightFM -> model_registry and the serving tables
(binary COPY) in a fresh database per test -> uvicorn on a free port, in a thread.

The helpers write what the ML job writes in production (a registry row, then the serving tables rebuilt in
one transaction after promotion); they are self-contained so the tests do not depend on the Dagster assets.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg.types.json import Jsonb

from clickstream_dagster.api import create_app
from clickstream_dagster.data.generator import generate
from clickstream_dagster.ml import (
    ModelBundle,
    dumps_bundle,
    popular_items,
    prepare_training_data,
    recommendations_for_visitors,
    similar_items,
    train_lightfm,
)
from clickstream_dagster.ml.config import LightFMParams
from clickstream_dagster.ml.prep import clean_events, read_csv_dir
from clickstream_dagster.ml.publish import write_serving_rows
from clickstream_dagster.stack.process import free_port
from tests.helpers import event_months

EVENTS = 30_000
TOP_N = 20  # rows per visitor / item in the serving tables
POPULAR_N = 15  # short fallback lists, so that k > 15 shows the top-up from `trending`
VERSION_TTL_S = 0.3

INSERT_MODEL = """
INSERT INTO model_registry (model_type, params, data_window, cleaning, metrics, library_versions, artefact,
                            artefact_sha256, status)
VALUES ('lightfm', %s, %s, %s, %s, %s, %s, %s, 'candidate')
RETURNING version
"""
RETIRE_PROMOTED = "UPDATE model_registry SET status = 'retired', decided_at = now() WHERE status = 'promoted'"
PROMOTE = (
    "UPDATE model_registry SET status = 'promoted', reason = 'test', decided_at = now() WHERE version = %s"
)
# What raw_events does for each valid message, with the ingestion time set (created_at: "now" by default).
INSERT_EVENT = """
INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid, created_at,
                                kafka_topic, kafka_partition, kafka_offset)
VALUES (%(ts)s, to_timestamp(%(ts)s / 1000.0), %(visitor)s, %(event)s, %(item)s, %(tx)s,
        now() - make_interval(secs => %(ago)s), 'test-events', 0, %(offset)s)
"""
EVENT_TIME_MS = 1_442_000_000_000  # event time of the events the tests insert (2015, as the data)
_offsets = itertools.count()


@dataclass
class TrainedModel:
    """One real LightFM model and the serving rows it yields."""

    recommendations: pd.DataFrame  # visitorid, rank, itemid, score
    similar: pd.DataFrame  # itemid, rank, similar_itemid, score
    popular: pd.DataFrame  # list, rank, itemid, score, visitors, recent_events, earlier_events, trend
    purchased: dict[int, set[int]]  # what each visitor bought in the training window
    bundle: ModelBundle
    params: dict[str, Any] = field(default_factory=dict)

    def recs_of(self, visitor: int) -> list[int]:
        rows = self.recommendations.loc[self.recommendations["visitorid"] == visitor]
        return rows.sort_values("rank")["itemid"].tolist()

    def similar_to(self, item: int) -> list[int]:
        rows = self.similar.loc[self.similar["itemid"] == item]
        return rows.sort_values("rank")["similar_itemid"].tolist()

    def fallback(self) -> list[int]:
        """popular, then trending items not already listed: what cold visitors get."""
        ordered = self.popular.sort_values(["list", "rank"])  # 'popular' < 'trending'
        return list(dict.fromkeys(ordered["itemid"].tolist()))


def train_model(events: pd.DataFrame, items: pd.DataFrame, params: LightFMParams) -> TrainedModel:
    data = prepare_training_data(events, items)
    model = train_lightfm(data, params)
    recs = recommendations_for_visitors(model, model.user_ids, n=TOP_N)
    similar = similar_items(model, k=TOP_N)
    popular = popular_items(data.events, n=POPULAR_N)
    bought = data.interactions.loc[data.interactions["purchases"] > 0]
    purchased: dict[int, set[int]] = {}
    for visitor, item in zip(bought["visitorid"].tolist(), bought["itemid"].tolist(), strict=True):
        purchased.setdefault(int(visitor), set()).add(int(item))
    bundle = ModelBundle(
        model.compact(), params=vars(params), data_window=data.window, metrics={"ndcg@10": 0.0}
    )
    return TrainedModel(recs, similar, popular, purchased, bundle, dict(vars(params)))


def register_model(url: str, trained: TrainedModel) -> int:
    """A candidate row in model_registry with the pickled bundle; returns its version."""
    artefact = dumps_bundle(trained.bundle)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            INSERT_MODEL,
            (
                Jsonb(trained.params),
                Jsonb(trained.bundle.data_window),
                Jsonb({}),
                Jsonb({"validation": trained.bundle.metrics}),
                Jsonb(trained.bundle.versions),
                artefact,
                hashlib.sha256(artefact).hexdigest(),
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def promote(url: str, version: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(RETIRE_PROMOTED)
        conn.execute(PROMOTE, (version,))


def rebuild_serving_tables(url: str, version: int, trained: TrainedModel) -> None:
    """`version`'s serving rows, written as the ML job writes them (popular_items last)."""
    with psycopg.connect(url) as conn:
        write_serving_rows(conn, "recommendations", trained.recommendations, version)
        write_serving_rows(conn, "similar_items", trained.similar, version)
        write_serving_rows(conn, "popular_items", trained.popular, version)


def publish(url: str, trained: TrainedModel) -> int:
    """What the ML job does with a model that passes the gate: register, promote, rebuild the tables."""
    version = register_model(url, trained)
    promote(url, version)
    rebuild_serving_tables(url, version, trained)
    return version


@dataclass(frozen=True)
class Event:
    visitorid: int
    event: str  # view | addtocart | transaction
    itemid: int
    minute: float = 0.0  # event time: minutes after EVENT_TIME_MS
    transactionid: int | None = None

    @property
    def timestamp(self) -> int:
        return EVENT_TIME_MS + int(self.minute * 60_000)


def _transactionid(event: Event) -> int | None:
    """On transactions only, as raw_events' checks require (a fresh id unless the event names one)."""
    if event.event != "transaction":
        return None
    return event.transactionid if event.transactionid is not None else next(_offsets)


def ingest(url: str, events: list[Event], ingested_ago_s: float = 0.0) -> None:
    """Insert events into clickstream_events as raw_events stores them, ingested `ingested_ago_s` ago."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        event_months(conn, [e.timestamp for e in events])
        cur.executemany(
            INSERT_EVENT,
            [
                {
                    "ts": e.timestamp,
                    "visitor": e.visitorid,
                    "event": e.event,
                    "item": e.itemid,
                    "tx": _transactionid(e),
                    "ago": float(ingested_ago_s),
                    "offset": next(_offsets),
                }
                for e in events
            ],
        )


class ApiServer:
    """uvicorn serving `app` on a free loopback port in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


# ---- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def events_and_items(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out: Path = tmp_path_factory.mktemp("api-data")
    generate(out, EVENTS, seed=7)
    events, items = read_csv_dir(out)
    cleaned, _counts = clean_events(events)
    return cleaned, items


@pytest.fixture(scope="session")
def model_a(events_and_items: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    return train_model(*events_and_items, LightFMParams(no_components=16, epochs=5, num_threads=1))


@pytest.fixture(scope="session")
def model_b(events_and_items: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    """A second model with other hyper-parameters and seed, so its rows differ from model_a's."""
    params = LightFMParams(no_components=24, epochs=8, random_state=7, num_threads=1)
    return train_model(*events_and_items, params)


@dataclass(frozen=True)
class Served:
    url: str  # the database
    version: int  # model_a's version, promoted and loaded
    base_url: str  # the live API
    client: httpx.Client


@pytest.fixture
def served(database_factory: Callable[..., str], model_a: TrainedModel) -> Iterator[Served]:
    """A fresh database with model_a published, and the API running over it."""
    url = database_factory()
    version = publish(url, model_a)
    with (
        ApiServer(create_app(url, version_ttl_s=VERSION_TTL_S)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield Served(url, version, server.url, client)


@pytest.fixture
def api_server_factory() -> Iterator[Callable[[FastAPI], ApiServer]]:
    """Start more servers (e.g. over a database without a model); stopped at the end of the test."""
    started: list[ApiServer] = []

    def start(app: FastAPI) -> ApiServer:
        server = ApiServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
