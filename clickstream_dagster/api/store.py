"""The promoted model's answers in memory (api/answers.py), and the visitor's own events through an async
psycopg 3 connection pool: PostgreSQL is read per request only for what changes live.

Which model answers: the version model_registry marks as promoted, re-read every `version_ttl_s` seconds by
a background task (and afresh by /health), so a newly promoted model is served without a restart. A promoted
model whose serving rows are not written yet (promotion and the table rebuild are separate steps) does not
take over until they are: the previous version keeps answering as long as its rows are still there. While no
model was ever promoted (the gate found too little evidence), the popular lists the ML job wrote under
POPULARITY_VERSION answer every visitor, and /health is ok and says why no model is promoted. When another
version (or a re-written one) is to be served, its rows are loaded into a new `ModelAnswers` in a worker
thread while the old one keeps answering; then one assignment swaps them. A request takes the current
`ModelAnswers` once, so an answer never mixes two models.

A visitor's answer is one query (VISITOR_SESSION: their purchases and live session) plus the lists in memory;
api/session.py scores and blends them.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from clickstream_dagster.api.answers import ModelAnswers, load_answers
from clickstream_dagster.api.session import SessionRules
from clickstream_dagster.settings import libpq_url, redact_url
from clickstream_dagster.sql import api as q

logger = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """PostgreSQL cannot answer, or no model can be served; the message says what to do next."""


@dataclass(frozen=True)
class ModelState:
    served: int | None  # the version answering requests (q.POPULARITY_VERSION: the popular lists only)
    promoted: int | None  # the version model_registry marks as promoted
    ready_at: datetime | None = None  # when the served version's rows were completed

    @property
    def popularity(self) -> bool:
        """No model is promoted (or ready) yet: the popular lists answer every visitor."""
        return self.served == q.POPULARITY_VERSION


class ServingStore:
    def __init__(
        self,
        database_url: str,
        *,
        version_ttl_s: float = 2.0,
        pool_min_size: int = 2,
        pool_max_size: int = 8,
        pool_timeout_s: float = 2.0,
        connect_timeout_s: int = 3,
        session_rules: SessionRules | None = None,
    ) -> None:
        self.conninfo = libpq_url(database_url)
        self.version_ttl_s = version_ttl_s
        self.session_rules = session_rules or SessionRules()
        self._session_params = self.session_rules.params()
        # Autocommit: one round trip per query (no BEGIN, no rollback on return to the pool).
        # prepare_threshold=0: every query is a server-side prepared statement from its first use.
        self.pool = AsyncConnectionPool(
            self.conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout_s,
            kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": connect_timeout_s},
            open=False,
            name="clickstream-api",
        )
        self.connect_timeout_s = connect_timeout_s
        self._state = ModelState(served=None, promoted=None)
        self._lock = asyncio.Lock()
        self._answers: ModelAnswers | None = None
        self._error: ServiceUnavailable | None = None  # why the last refresh failed, until one succeeds
        self._refresher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Load the promoted model before the first request when PostgreSQL answers; when it does not, start
        anyway (/health says 503 and why) and keep trying in the background."""
        await self.pool.open(wait=False)
        try:
            await self.model_state()
        except ServiceUnavailable as exc:
            logger.warning("starting without a model: %s", exc)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="clickstream-api-model")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.pool.close()

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.model_state()
            except ServiceUnavailable as exc:
                logger.warning("model refresh: %s", exc)
            except Exception:  # keep serving what is loaded; the next round retries
                logger.exception("model refresh failed")
            await asyncio.sleep(self.version_ttl_s)

    def unreachable(self, exc: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"PostgreSQL not reachable at {redact_url(self.conninfo)}: run `clickstream up` or set "
            f"DATABASE_URL ({type(exc).__name__}: {str(exc).strip() or 'no detail'})"
        )

    async def _fetch(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise ServiceUnavailable(
                f"the serving tables are missing in {redact_url(self.conninfo)}: apply the migrations "
                f"(`clickstream up` does) ({exc})"
            ) from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self.unreachable(exc) from exc

    @property
    def cached_state(self) -> ModelState:
        """The last resolved state, without a query."""
        return self._state

    # ---- which model answers -------------------------------------------------------------------------

    async def model_state(self) -> ModelState:
        """The served and promoted versions, read afresh (the background task does every `version_ttl_s`,
        /health on each call); the served version's answers are loaded into memory before it is reported
        as served."""
        async with self._lock:  # one refresh at a time
            try:
                state = await self._resolve()
                loaded = self._answers
                if state.served is None:
                    self._answers = None
                elif loaded is None or (loaded.version, loaded.ready_at) != (state.served, state.ready_at):
                    self._answers = await asyncio.to_thread(self._load, state.served)
            except ServiceUnavailable as exc:
                self._error = exc
                raise
            self._error = None
            self._state = state
            return self._state

    def _load(self, version: int) -> ModelAnswers:
        started = time.perf_counter()
        try:
            with psycopg.connect(self.conninfo, connect_timeout=self.connect_timeout_s) as conn:
                answers = load_answers(conn, version)
        except psycopg.OperationalError as exc:
            raise self.unreachable(exc) from exc
        logger.info(
            "model %d in memory: %d visitors, %d recommendation rows, %d items with similar items, %.0f MB, "
            "in %.2f s", version, len(answers.recommendations), answers.recommendations.rows,
            len(answers.similar), answers.nbytes / 2**20, time.perf_counter() - started,
        )  # fmt: skip
        return answers

    async def _resolve(self) -> ModelState:
        rows = await self._fetch(q.PROMOTED_MODEL)
        promoted, ready_at = (int(rows[0][0]), rows[0][1]) if rows else (None, None)
        if promoted is not None and ready_at is not None:
            return ModelState(served=promoted, promoted=promoted, ready_at=ready_at)
        # No model's rows are ready: the version served before keeps answering while its rows are there,
        # else the popular lists of POPULARITY_VERSION when the ML job wrote them.
        previous = self._state.served
        for version in dict.fromkeys((previous, q.POPULARITY_VERSION)):
            if version is None or version == promoted:
                continue
            (at,) = (await self._fetch(q.VERSION_READY_AT, (version,)))[0]
            if at is not None:
                return ModelState(served=version, promoted=promoted, ready_at=at)
        return ModelState(served=None, promoted=promoted)

    async def gate_reason(self) -> str | None:
        """The promotion gate's reason for the newest model a training run selected (why none is promoted)."""
        rows = await self._fetch(q.LATEST_GATE_DECISION)
        return f"model v{rows[0][0]}: {rows[0][1]}" if rows else None

    def answers(self) -> ModelAnswers:
        """The model answering now, whole; ServiceUnavailable when there is none."""
        answers = self._answers
        if answers is None:
            raise self._error or ServiceUnavailable(no_model_message(self._state))
        return answers

    @property
    def loaded(self) -> ModelAnswers | None:
        return self._answers

    # ---- what changes live ---------------------------------------------------------------------------

    async def session_rows(self, user_id: int) -> list[tuple[Any, ...]]:
        """VISITOR_SESSION's rows for the visitor: their purchases and their live session's events."""
        return await self._fetch(q.VISITOR_SESSION, {**self._session_params, "visitor": user_id})


def no_model_message(state: ModelState) -> str:
    if state.promoted is None:
        return (
            "no model is promoted and no popular lists are written yet: run the ML job (train_recommender: "
            "it trains, gates and promotes a model, or writes the popular lists when the gate finds too "
            "little evidence)"
        )
    return (
        f"model {state.promoted} is promoted but its serving rows (recommendations, similar_items, "
        f"popular_items) are not written yet: wait for the ML job to finish, or re-run it"
    )
