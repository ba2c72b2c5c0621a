"""Reads the serving tables of the promoted model, and the visitor's own events, through an async psycopg 3
connection pool.

Which model answers: the version model_registry marks as promoted, re-read at most every `version_ttl_s`
seconds, so a newly promoted model is served without a restart. Every query filters on that version, so an
answer never mixes two models. A promoted model whose serving rows are not written yet (promotion and the
table rebuild are separate steps) does not take over until they are: the previous version keeps answering
as long as its rows are still there.

A visitor's answer is one query (VISITOR_ANSWER: their live session's neighbours, their precomputed list, what
they bought) plus the fallback lists, fetched once per model version; api/session.py blends them.
"""

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from clickstream_dagster.api.session import SessionRules, VisitorRows, split_parts
from clickstream_dagster.settings import libpq_url, redact_url
from clickstream_dagster.sql import serving as q


class ServiceUnavailable(Exception):
    """PostgreSQL cannot answer, or no model can be served; the message says what to do next."""


@dataclass(frozen=True)
class ModelState:
    served: int | None  # the version answering requests
    promoted: int | None  # the version model_registry marks as promoted


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
        self._state = ModelState(served=None, promoted=None)
        self._checked_at = -float("inf")
        self._lock = asyncio.Lock()
        self._fallback: tuple[int, list[tuple[int, float]]] | None = None  # (version, merged list)

    async def open(self) -> None:
        # Do not wait: the service starts (and /health says 503) while PostgreSQL is down.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

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

    async def model_state(self, force: bool = False) -> ModelState:
        """The served and promoted versions, re-read when older than the TTL (or when `force`)."""
        if not force and time.monotonic() - self._checked_at < self.version_ttl_s:
            return self._state
        async with self._lock:  # one refresh at a time; the others reuse its result
            if not force and time.monotonic() - self._checked_at < self.version_ttl_s:
                return self._state
            self._state = await self._resolve()
            self._checked_at = time.monotonic()
            return self._state

    async def _resolve(self) -> ModelState:
        rows = await self._fetch(q.PROMOTED_MODEL)
        if not rows:
            return ModelState(served=None, promoted=None)
        promoted, ready = int(rows[0][0]), bool(rows[0][1])
        if ready:
            return ModelState(served=promoted, promoted=promoted)
        previous = self._state.served
        if previous is not None and previous != promoted:
            (still_there,) = (await self._fetch(q.VERSION_READY, (previous,)))[0]
            if still_there:
                return ModelState(served=previous, promoted=promoted)
        return ModelState(served=None, promoted=promoted)

    async def served_version(self) -> int:
        state = await self.model_state()
        if state.served is None:
            raise ServiceUnavailable(no_model_message(state))
        return state.served

    # ---- answers -------------------------------------------------------------------------------------

    async def visitor_rows(self, user_id: int, version: int, k: int) -> VisitorRows:
        """What the visitor's answer is made of (api/session.py), from one query."""
        params = {**self._session_params, "visitor": user_id, "version": version, "k": k}
        return split_parts(await self._fetch(q.VISITOR_ANSWER, params))

    async def fallback(self, version: int) -> list[tuple[int, float]]:
        """The popular list, topped up from trending without repeats; fetched once per model version."""
        cached = self._fallback
        if cached is None or cached[0] != version:
            merged: list[tuple[int, float]] = []
            seen: set[int] = set()
            for _list, item, score in await self._fetch(q.POPULAR_ITEMS, (version,)):
                if item not in seen:
                    seen.add(item)
                    merged.append((int(item), float(score)))
            cached = self._fallback = (version, merged)
        return cached[1]

    async def similar_items(self, item_id: int, version: int, k: int) -> list[tuple[int, float]]:
        return [(int(i), float(s)) for i, s in await self._fetch(q.SIMILAR_ITEMS, (item_id, version, k))]


def no_model_message(state: ModelState) -> str:
    if state.promoted is None:
        return "no model is promoted in model_registry: run the ML job (it trains, gates and promotes one)"
    return (
        f"model {state.promoted} is promoted but its serving rows (recommendations, similar_items, "
        f"popular_items) are not written yet: wait for the ML job to finish, or re-run it"
    )
