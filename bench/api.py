"""API latency: GET /recommendations at a fixed rate (open loop) and at its maximum; peers from the same run.

One run:
1. PostgreSQL: an embedded server on a free port in a temporary folder (or a scratch database on the server
   of --database-url / DATABASE_URL, dropped afterwards), migrated.
2. A real model: the generator's events (250,000 by default; `--events full`: all 2,756,101), cleaned,
   LightFM trained (32 components, 10 epochs: the serving tables' shape, not the daily job's quality), and its serving rows
   (top-20 per visitor, 20 similar items per item, popular/trending) written with binary COPY, plus a
   promoted model_registry row: what the ML job leaves behind. The same events (all of them, as ingested)
   go into clickstream_events, ingested "now": every visitor with events has a live session, so every
   known visitor's answer runs the whole session part (the heaviest case; --no-events leaves the table
   empty, as before the API read it).
3. The API as its own process (`python -m clickstream_dagster.api`, uvicorn with uvloop + httptools).
4. The load generator in another process: a minimal HTTP/1.1 keep-alive client on asyncio + uvloop.
   - fixed rate: requests are scheduled at exact instants (open loop, as wrk2 does); a request whose
     connection is busy waits for one or opens a new one, and its latency runs from its scheduled instant,
     so a stalled server is charged for every request it delays (no coordinated omission). `wrk` is closed
     loop and would hide exactly that, which is why it is not used for the latency figures;
   - maximum: closed loop, --connections concurrent keep-alive connections as fast as answers come.
   The visitors are a shuffled sample of those with recommendations, plus --cold-share unknown visitors
   (popular fallback).
5. Peers, same data, same load generator, same uvicorn settings:
   - a raw ASGI app (no FastAPI, no pydantic, no metrics) holding the same lists in memory and running the
     same query, scoring and blend (api/answers.py, api/session.py) on the same pool settings: what the
     framework costs;
   - the query alone, straight from psycopg's async pool at the same rate: the database's share.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from clickstream_dagster.api.answers import load_answers
from clickstream_dagster.api.session import SessionRules, blend, visitor_rows
from clickstream_dagster.data.generator import Scale, parse_scale
from clickstream_dagster.ingestion import months
from clickstream_dagster.ml.publish import write_serving_rows
from clickstream_dagster.sql import api as q
from clickstream_dagster.sql.copy import copy_frame
from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import EVENTS_DATABASE, Ports, StackConfig, libpq_url, with_database
from clickstream_dagster.stack.process import free_port, wait_until

HOST = "127.0.0.1"
TOP_N = 20
K = 10

# Bench-only writes (the ML job owns the production ones).
INSERT_CANDIDATE_MODEL = """
INSERT INTO model_registry (model_type, params, data_window, cleaning, metrics, library_versions, artefact,
                            artefact_sha256, status, reason)
VALUES ('lightfm', %s, %s, %s, '{}', '{}', %s, %s, 'candidate', 'bench')
RETURNING version
"""
RETIRE_PROMOTED = "UPDATE model_registry SET status = 'retired' WHERE status = 'promoted'"
PROMOTE = "UPDATE model_registry SET status = 'promoted', decided_at = now() WHERE version = %s"
COPY_EVENTS = """
COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid, kafka_topic,
                         kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)
"""
EVENT_TYPES = ("int8", "timestamptz", "int8", "text", "int8", "int8", "text", "int4", "int8")
EVENT_COLUMNS = ("timestamp", "event_time", "visitorid", "event", "itemid", "transactionid", "kafka_topic",
                 "kafka_partition", "kafka_offset")  # fmt: skip
SESSION_PARAMS = SessionRules().params()  # the API's defaults


def session_params(user: int) -> dict[str, Any]:
    return {**SESSION_PARAMS, "visitor": user}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", default="250000", help="generated events to train on: a number, or 'full' (2,756,101)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rates", default="500,1000", help="fixed request rates, per second, comma-separated (each one run)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds at the fixed rate")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each run")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="measured seconds of the max run")
    parser.add_argument("--connections", type=int, default=32, help="connections of the max-throughput run")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (API and peer)")
    parser.add_argument("--cold-share", type=float, default=0.1, help="share of unknown visitors")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="use a scratch database on this server instead of an embedded one (default: DATABASE_URL)",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure the API only")
    parser.add_argument(
        "--switch-seconds",
        type=float,
        default=90.0,
        help="length of the load run during which a new model version is published (0: no switch)",
    )
    parser.add_argument(
        "--no-events", action="store_true", help="leave clickstream_events empty (no live sessions)"
    )


# ---- data ------------------------------------------------------------------------------------------------


@dataclass
class ServingRows:
    events: pd.DataFrame  # as generated (timestamp, visitorid, event, itemid, transactionid)
    recommendations: pd.DataFrame
    similar: pd.DataFrame
    popular: pd.DataFrame
    artefact: bytes
    params: dict[str, Any]
    window: dict[str, int]
    cleaning: dict[str, int]


def train(events_n: Scale, seed: int, folder: Path) -> ServingRows:
    """LightFM (32 components, 10 epochs) on `events_n` generated events, and its serving rows: the shape the
    ML job leaves (20 per known visitor, 20 similar items per item), at a fraction of the daily job's time."""
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

    generate(folder, events_n, seed=seed)
    print(f"generated {events_n} events; training the bench model ...", flush=True)
    events, items = read_csv_dir(folder)
    cleaned, cleaning = clean_events(events)
    data = prepare_training_data(cleaned, items)
    params = LightFMParams(no_components=32, epochs=10)
    model = train_lightfm(data, params)
    recs = recommendations_for_visitors(model, model.user_ids, n=TOP_N)
    similar = similar_items(model, k=TOP_N)
    popular = popular_items(data.events)
    artefact = dumps_bundle(ModelBundle(model.compact(), params=vars(params), data_window=data.window))
    return ServingRows(events, recs, similar, popular, artefact, dict(vars(params)), data.window, cleaning)


def load_events(url: str, events: pd.DataFrame) -> None:
    """The events into clickstream_events as if raw_events had just ingested them (created_at now)."""
    frame = events.assign(
        event_time=pd.to_datetime(events["timestamp"], unit="ms", utc=True),
        transactionid=events["transactionid"].astype("Int64"),
        kafka_topic="bench",
        kafka_partition=0,
        kafka_offset=np.arange(len(events), dtype=np.int64),
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        months.ensure(cur, months.months_of(frame["timestamp"]))
        copy_frame(cur, COPY_EVENTS, EVENT_TYPES, frame, EVENT_COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE clickstream_events")


def load(url: str, rows: ServingRows) -> int:
    """A promoted registry row and its serving tables, as the ML job leaves them; returns the version."""
    version = stage_version(url, rows)
    promote_staged(url, rows, version)
    return version


def stage_version(url: str, rows: ServingRows) -> int:
    """Another model version with its two large tables written, as a candidate: the API ignores it."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            INSERT_CANDIDATE_MODEL,
            (
                Jsonb(rows.params),
                Jsonb(rows.window),
                Jsonb(rows.cleaning),
                rows.artefact,
                hashlib.sha256(rows.artefact).hexdigest(),
            ),
        )
        fetched = cur.fetchone()
        assert fetched is not None
        version = int(fetched[0])
        write_serving_rows(conn, "recommendations", rows.recommendations, version)
        write_serving_rows(conn, "similar_items", rows.similar, version)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE recommendations, similar_items")
    return version


def promote_staged(url: str, rows: ServingRows, version: int) -> float:
    """The staged version promoted and its popular_items (the rows that mark it ready) written, in one
    transaction; returns when that committed (perf_counter)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(RETIRE_PROMOTED)
        cur.execute(PROMOTE, (version,))
        write_serving_rows(conn, "popular_items", rows.popular, version)
    return time.perf_counter()


@contextmanager
def database(database_url: str | None, folder: Path) -> Iterator[str]:
    """A migrated, empty events database: scratch on `database_url`'s server, else embedded."""
    if database_url:
        admin = with_database(libpq_url(database_url), "postgres")
        name = f"bench_api_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = with_database(libpq_url(database_url), name)
            apply_migrations(url)
            yield url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    from clickstream_dagster.stack.postgres import EmbeddedPostgres, ensure_database

    ports = Ports(*(free_port() for _ in dataclasses.fields(Ports)))
    cfg = StackConfig.from_env({}).with_data_dir(folder / "stack", ports)
    server = EmbeddedPostgres(cfg)
    server.start()
    try:
        ensure_database(cfg.database_url, EVENTS_DATABASE)
        apply_migrations(cfg.database_url)
        yield cfg.database_url
    finally:
        server.stop()


# ---- servers ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn's workers)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and its peak so far (Linux: VmRSS and VmHWM), MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return tuple(float(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def served_version(port: int) -> int | None:
    try:
        body = httpx.get(f"http://{HOST}:{port}/health", timeout=5).json()
    except (httpx.TransportError, ValueError):
        return None
    version = body.get("model_version")
    return int(version) if version is not None else None


def postmaster(url: str) -> int:
    """The pid of the PostgreSQL server behind `url` (the parent of a backend; the server is local)."""
    with psycopg.connect(url) as conn:  # asked while the backend lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return psutil.Process(int(row[0])).ppid()


def postgres_cpu_seconds(pid: int) -> float:
    """User + system CPU of PostgreSQL: the postmaster, its live backends, and the ended ones it reaped."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


@contextmanager
def serve(
    argv: list[str], url: str, port: int, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[int]:
    env = {**os.environ, "DATABASE_URL": url, **(extra_env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]
        )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(
            healthy,
            60,
            f"{argv[2]} on port {port}",
            alive=lambda: proc.poll() is None,
            on_fail=lambda: log.read_text()[-3000:],
        )
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api_argv(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "clickstream_dagster.api", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--log-level", "warning"]  # fmt: skip


def peer_argv(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "bench.api:peer_app_from_env", "--factory", "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
            "--loop", "uvloop", "--http", "httptools"]  # fmt: skip


def floor_argv(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "bench.api:floor_app_from_env", "--factory", "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
            "--loop", "uvloop", "--http", "httptools"]  # fmt: skip


# An answer of the usual size (k=10), sent as it is by the floor peer.
FLOOR_BODY = json.dumps(
    {
        "user_id": 1234567,
        "source": "session",
        "model_version": 1,
        "items": [
            {"rank": r, "itemid": 400000 + r, "score": 0.123456789, "source": "session"} for r in range(1, 11)
        ],
    },
    separators=(",", ":"),
).encode()


def floor_app_from_env() -> Callable[..., Awaitable[None]]:
    """The floor peer: uvicorn with the same settings answering every request with a fixed body of an
    answer's size, no database, no work: what HTTP on loopback costs one worker per request."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(FLOOR_BODY)).encode())]

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": FLOOR_BODY})

    return app


def peer_app_from_env() -> Callable[..., Awaitable[None]]:
    """The raw ASGI peer: the same lists in memory, query, scoring, blend and pool settings as the API, JSON
    by hand, nothing else (no FastAPI, pydantic or metrics). With BENCH_PEER=query it runs the session
    query only and sends the floor peer's fixed body: HTTP plus the query, no scoring."""
    query_only = os.environ.get("BENCH_PEER") == "query"
    from psycopg_pool import AsyncConnectionPool

    url = libpq_url(os.environ["DATABASE_URL"])
    pool = AsyncConnectionPool(
        url, min_size=2, max_size=8, kwargs={"autocommit": True, "prepare_threshold": 0}, open=False
    )
    rules = SessionRules()
    state: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await pool.open()
                    with psycopg.connect(url) as conn:
                        promoted = conn.execute(q.PROMOTED_MODEL).fetchone()
                        assert promoted is not None, "no promoted model"
                        conn.commit()  # load_answers opens its own snapshot
                        state["answers"] = load_answers(conn, int(promoted[0]))
                    await send({"type": "lifespan.startup.complete"})
            await pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        status: int = 404
        body: dict[str, Any] = {"detail": "Not Found"}
        answers = state["answers"]
        if path == "/health":
            status, body = 200, {"status": "ok", "model_version": answers.version}
        elif path.startswith("/recommendations/"):
            user = int(path.rsplit("/", 1)[1])
            async with pool.connection() as conn:
                rows = await (await conn.execute(q.VISITOR_SESSION, session_params(user))).fetchall()
            if query_only:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(FLOOR_BODY)),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": FLOOR_BODY})
                return
            parts = visitor_rows(rows, answers.recommendations, answers.similar, user, K, rules)
            source, answer = blend(parts, answers.fallback, K)
            items = [
                {"rank": r, "itemid": i, "score": s, "source": f} for r, (i, s, f) in enumerate(answer, 1)
            ]
            status = 200
            body = {"user_id": user, "source": source, "model_version": answers.version, "items": items}
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


# ---- load generator (its own process) ------------------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    mode: str  # "fixed" or "max"
    target_rate: float
    sent: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float = float("nan")  # CPU the server used during the run, warm-up included
    requests_total: int = 0  # requests of the run, warm-up included
    db_cpu_s: float = float("nan")  # CPU of the embedded PostgreSQL during the run (all its processes)

    @property
    def throughput(self) -> float:
        return (self.sent - self.errors) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        return float(np.percentile(self.latencies_ms, p)) if self.latencies_ms else float("nan")


class HttpClient:
    """HTTP/1.1 keep-alive GETs over raw asyncio streams: a few microseconds of client CPU per request.
    At most `max_connections` are open; beyond that a request waits for a free one (and that wait counts
    in its latency)."""

    def __init__(self, host: str, port: int, max_connections: int = 256) -> None:
        self.host, self.port = host, port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.opened = 0
        self.max_connections = max_connections

    async def warm(self, n: int) -> None:
        self.opened += n
        for conn in await asyncio.gather(*(asyncio.open_connection(self.host, self.port) for _ in range(n))):
            self.idle.put_nowait(conn)

    async def get(self, path: str) -> int:
        if self.idle.empty() and self.opened < self.max_connections:
            self.opened += 1
            reader, writer = await asyncio.open_connection(self.host, self.port)
        else:
            reader, writer = await self.idle.get()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        await reader.readexactly(length)
        self.idle.put_nowait((reader, writer))
        return status


async def fixed_rate(
    fire: Callable[[int], Awaitable[int]], rate: float, seconds: float, warmup: float
) -> tuple[int, int, float, list[float], int]:
    """Open loop: request i is due at start + i / rate; its latency is measured from that instant.
    (perf_counter, not loop.time(): uvloop's clock has millisecond resolution.)"""
    skip, total = int(warmup * rate), int((warmup + seconds) * rate)
    latencies: list[float] = []
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        try:
            ok = await fire(i) == 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
        if i >= skip:
            latencies.append((time.perf_counter() - due) * 1000)
            errors += not ok

    tasks = set()
    start = time.perf_counter() + 0.1
    for i in range(total):
        due = start + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    measured = time.perf_counter() - (start + skip / rate)
    return total - skip, errors, measured, latencies, total


async def max_rate(
    fire: Callable[[int], Awaitable[int]], connections: int, seconds: float, warmup: float
) -> tuple[int, int, float, list[float], int]:
    """Closed loop: `connections` workers, each sending its next request when the previous is answered."""
    counter = iter(range(10**12))
    begin = time.perf_counter() + warmup
    end = begin + seconds
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while (now := time.perf_counter()) < end:
            try:
                ok = await fire(next(counter)) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
            if now >= begin:
                latencies.append((time.perf_counter() - now) * 1000)
                errors += not ok

    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies), errors, time.perf_counter() - begin, latencies, next(counter)


def _loadgen(job: dict[str, Any]) -> LoadResult:
    import uvloop

    async def main() -> LoadResult:
        paths: list[str] = job["paths"]
        pool = None
        if job["target"] == "psycopg":
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                job["url"],
                min_size=2,
                max_size=8,
                kwargs={"autocommit": True, "prepare_threshold": 0},
                open=False,
            )
            await pool.open()
            users = job["users"]

            async def fire(i: int) -> int:
                assert pool is not None
                async with pool.connection() as conn:
                    params = session_params(users[i % len(users)])
                    await (await conn.execute(q.VISITOR_SESSION, params)).fetchall()
                return 200
        else:
            client = HttpClient(HOST, job["port"], max_connections=max(job["connections"], 256))
            await client.warm(job["connections"])

            async def fire(i: int) -> int:
                return await client.get(paths[i % len(paths)])

        if job["mode"] == "fixed":
            sent, errors, seconds, lat, total = await fixed_rate(
                fire, job["rate"], job["seconds"], job["warmup"]
            )
        else:
            sent, errors, seconds, lat, total = await max_rate(
                fire, job["connections"], job["seconds"], job["warmup"]
            )
        if pool is not None:
            await pool.close()
        result = LoadResult(job["label"], job["mode"], job["rate"], sent, errors, seconds, lat)
        result.requests_total = total
        return result

    return uvloop.run(main())


def drive(job: dict[str, Any]) -> LoadResult:
    ctx = get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_loadgen, (job,))


@dataclass
class Switch:
    load: LoadResult  # the fixed-rate run the switch happened in
    old: int
    new: int
    staged_s: float  # writing the new version's rows before the run
    served_after_s: float  # from its promotion to the API answering with it
    memory_before: tuple[float, float]  # RSS, peak (MB)
    memory_after: tuple[float, float]

    def describe(self) -> str:
        return (
            f"model switch {self.old} -> {self.new} under {self.load.target_rate:,.0f} req/s (its rows written "
            f"in {self.staged_s:.1f} s before): served {self.served_after_s:.1f} s after its promotion, "
            f"{self.load.errors} failed requests, p99 {self.load.pct(99):.2f} ms, max {max(self.load.latencies_ms):.1f} ms; API memory {self.memory_before[0]:,.0f} MB before, {self.memory_after[0]:,.0f} "
            f"MB after, peak {self.memory_after[1]:,.0f} MB (two models and a load)"
        )


def switch_under_load(
    job: dict[str, Any], url: str, rows: ServingRows, port: int, pid: int, old: int
) -> Switch:
    """A fixed-rate run during which another version, its rows written beforehand (so that the run measures
    the API's switch, not PostgreSQL writing millions of rows on the same 2 cores), is promoted and marked
    ready; the API must take it over without a failed request. The run must outlast the switch."""
    from concurrent.futures import ProcessPoolExecutor

    staged_at = time.perf_counter()
    new = stage_version(url, rows)
    staged_s = time.perf_counter() - staged_at
    before = memory_mb(pid)
    cpu_before = cpu_seconds(pid)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        future = pool.submit(_loadgen, job)
        time.sleep(job["warmup"] + 1)
        written = promote_staged(url, rows, new)
        while served_version(port) != new:
            if future.done():
                raise SystemExit(
                    f"the API did not serve model {new} before the load run ended: raise --switch-seconds"
                )
            time.sleep(0.1)
        served = time.perf_counter()
        load = future.result()
    load.server_cpu_s = cpu_seconds(pid) - cpu_before
    return Switch(load, old, new, staged_s, served - written, before, memory_mb(pid))


# ---- the run ---------------------------------------------------------------------------------------------


def _report(r: LoadResult) -> str:
    rate = f"{r.target_rate:,.0f}/s" if r.mode == "fixed" else "max"
    return (
        f"  {r.label:<34} {rate:>8}  achieved {r.throughput:8,.0f} req/s  p50 {r.pct(50):6.2f} ms  "
        f"p99 {r.pct(99):6.2f} ms  p99.9 {r.pct(99.9):6.2f} ms  max {max(r.latencies_ms, default=0):7.2f} ms  "
        f"errors {r.errors}"
        + (
            f"  server CPU {r.server_cpu_s * 1000 / r.requests_total:.2f} ms/req"
            if r.requests_total and r.server_cpu_s == r.server_cpu_s  # NaN: no server process (psycopg)
            else ""
        )
        + (
            f"  PostgreSQL CPU {r.db_cpu_s * 1000 / r.requests_total:.2f} ms/req"
            if r.requests_total and r.db_cpu_s == r.db_cpu_s  # NaN: not an embedded server
            else ""
        )
    )


def _sources(port: int, paths: list[str]) -> str:
    """How a sample of the run's requests is answered (the source of each answer)."""
    seen: dict[str, int] = {}
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as client:
        for path in paths:
            source = client.get(path).json()["source"]
            seen[source] = seen.get(source, 0) + 1
    return ", ".join(f"{name} {100 * n / len(paths):.0f}%" for name, n in sorted(seen.items()))


def run(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    results: list[LoadResult] = []
    switch: Switch | None = None
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, fastapi {package_version('fastapi')}, "
        f"uvicorn {package_version('uvicorn')}, psycopg {package_version('psycopg')}; "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    try:
        with ExitStack() as stack:
            started = time.perf_counter()
            url = stack.enter_context(database(args.database_url, folder))
            rows = train(parse_scale(str(args.events)), args.seed, folder / "data")
            version = load(url, rows)
            if not args.no_events:
                load_events(url, rows.events)
            visitors = rows.recommendations["visitorid"].unique().tolist()
            print(
                f"model {version}: {len(rows.events):,} events -> {len(visitors):,} visitors with recommendations "
                f"({len(rows.recommendations):,} rows), {len(rows.similar):,} similar-item rows; "
                f"clickstream_events {'empty' if args.no_events else f'{len(rows.events):,} rows, live'}; "
                f"ready in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            rng = random.Random(args.seed)
            sample = rng.sample(visitors, min(len(visitors), 20_000))
            unknown = max(visitors) + 1
            cold = int(len(sample) * args.cold_share / max(1 - args.cold_share, 1e-9))
            users = sample + list(range(unknown, unknown + cold))
            rng.shuffle(users)
            paths = [f"/recommendations/{u}?k={K}" for u in users]
            server = None if args.database_url else postmaster(url)

            def db_cpu() -> float:
                return postgres_cpu_seconds(server) if server is not None else float("nan")

            base = {"paths": paths, "url": url, "version": version, "users": users, "warmup": args.warmup}
            rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
            fixed = [{"mode": "fixed", "rate": r, "seconds": args.seconds, "connections": 16} for r in rates]
            peak = {"mode": "max", "rate": 0.0, "seconds": args.max_seconds, "connections": args.connections}
            memory: dict[str, tuple[float, float]] = {}
            targets: list[tuple[str, str, Callable[[int, int], list[str]], dict[str, str]]] = [
                ("api", f"API (FastAPI, {args.workers} worker)", api_argv, {})
            ]
            if not args.no_peers:
                targets += [
                    ("peer", f"peer: raw ASGI, {args.workers} worker", peer_argv, {}),
                    ("peer", "peer: raw ASGI, the query only", peer_argv, {"BENCH_PEER": "query"}),
                    ("peer", "peer: uvicorn alone, fixed body", floor_argv, {}),
                ]
            for target, label, argv, extra_env in targets:
                port = free_port()
                log = folder / f"{target}-{len(results)}.log"
                with serve(argv(port, args.workers), url, port, log, extra_env) as pid:
                    if target == "api":
                        print(f"  answers by source: {_sources(port, paths[:500])}", flush=True)
                    memory[label] = memory_mb(pid)
                    print(
                        f"  {label}: resident memory {memory[label][0]:,.0f} MB with the model loaded "
                        f"(peak {memory[label][1]:,.0f} MB)",
                        flush=True,
                    )
                    for mode in (*fixed, peak):
                        job = {**base, **mode, "target": target, "port": port, "label": label}
                        cpu_before, db_before = cpu_seconds(pid), db_cpu()
                        result = drive(job)
                        result.server_cpu_s = cpu_seconds(pid) - cpu_before
                        result.db_cpu_s = db_cpu() - db_before
                        results.append(result)
                        print(_report(result), flush=True)
                    if target == "api" and args.switch_seconds > 0:
                        job = {**base, **fixed[-1], "seconds": args.switch_seconds, "target": "api",
                               "port": port, "label": f"{label}, model switch"}  # fmt: skip
                        switch = switch_under_load(job, url, rows, port, pid, version)
                        results.append(switch.load)
                        print(_report(switch.load), flush=True)
                        print(switch.describe(), flush=True)
            if not args.no_peers:
                for mode in fixed:
                    job = {**base, **mode, "target": "psycopg", "label": "peer: the query alone (psycopg)"}
                    db_before = db_cpu()
                    results.append(drive(job))
                    results[-1].db_cpu_s = db_cpu() - db_before
                    print(_report(results[-1]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    api_label = f"API (FastAPI, {args.workers} worker)"
    api = {(r.mode, r.target_rate): r for r in results if r.label == api_label}
    top = api[("fixed", max(rates))]
    peak_api = api[("max", 0.0)]
    scale = (
        "full-scale model" if str(args.events) == "full" else f"{parse_scale(str(args.events)):,}-event model"
    )
    print(
        f"API at {max(rates):,.0f} req/s, {scale}: p50 {top.pct(50):.2f} ms, p99 {top.pct(99):.2f} ms, "
        f"max {peak_api.throughput:,.0f} req/s, server CPU {top.server_cpu_s * 1000 / top.requests_total:.2f} ms/req"
    )
    api_memory = memory[api_label]
    print(
        f"API resident memory with the model loaded: {api_memory[0]:,.0f} MB, peak while loading it {api_memory[1]:,.0f} MB"
    )
    if switch is not None:
        print(switch.describe())
    cpu = top.server_cpu_s * 1000 / top.requests_total
    floors = [
        r for r in results if r.mode == "fixed" and r.target_rate == max(rates) and r.label.startswith("peer")
    ]
    print(
        f"target server CPU <= 0.2 ms/req at {max(rates):,.0f} req/s: {'met' if cpu <= 0.2 else 'NOT met'} "
        f"({cpu:.2f} ms/req; same run: "
        + ", ".join(
            f"{r.label.removeprefix('peer: ')} {r.server_cpu_s * 1000 / r.requests_total:.2f}"
            for r in floors
            if r.requests_total and r.server_cpu_s == r.server_cpu_s
        )
        + ")"
    )
    ok = top.pct(99) <= 10.0 and top.errors == 0 and top.throughput >= 0.98 * max(rates)
    ok = ok and (switch is None or switch.load.errors == 0)
    print(f"target p99 <= 10 ms at {max(rates):,.0f} req/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1
