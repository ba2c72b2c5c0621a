"""The recommendations service: FastAPI over the serving tables of the promoted model and the visitor's live
session in clickstream_events.

`create_app(database_url)` builds it (tests, the stack and `python -m clickstream_dagster.api` use it);
`app_from_env()` is the factory uvicorn calls, with DATABASE_URL or the embedded stack's default database.
"""

import gc
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from clickstream_dagster.api.fastpath import RecommendationsFastPath
from clickstream_dagster.api.metrics import ApiMetrics, MetricsMiddleware
from clickstream_dagster.api.schemas import (
    ErrorResponse,
    HealthResponse,
    RecommendationsResponse,
    SimilarItem,
    SimilarItemsResponse,
    ValidationErrorResponse,
)
from clickstream_dagster.api.session import SOURCES, SessionRules, blend, visitor_rows
from clickstream_dagster.api.store import ServiceUnavailable, ServingStore, no_model_message
from clickstream_dagster.settings import Settings
from clickstream_dagster.sql.api import POPULAR_ITEMS_PER_LIST, SIMILAR_ITEMS_PER_ITEM

MAX_K = POPULAR_ITEMS_PER_LIST  # an answer longer than the session's and the model's lists is topped up
MAX_SIMILAR_K = SIMILAR_ITEMS_PER_ITEM  # the neighbours the ML job stores per item
DEFAULT_K = 10
MAX_ID = 2**63 - 1  # ids are PostgreSQL bigint


def service_description(rules: SessionRules) -> str:
    """The OpenAPI description of the service, with the live-session rules it runs."""
    return f"""
Recommendations of the promoted model (whichever type the ML job promoted), held in the service's memory
(loaded from the serving tables the ML job rebuilds after every promotion), and following each visitor's
live session, read from PostgreSQL on every request: events ingested seconds ago change the answer, with no
retraining.

- **Live session**: the visitor's newest {rules.events} views and add-to-carts in `clickstream_events`, cut at
  the first gap of more than {rules.gap_s / 60:g} minutes, live when one of them was ingested in the last
  {rules.live_s / 60:g} minutes. Its items' neighbours in the promoted model's `similar_items` are scored by
  similarity x event weight (add-to-cart {rules.cart_weight:g}, view {rules.view_weight:g}) x recency (each
  older event {rules.decay:g} of the next newer one). A brand-new visitor who has viewed a few items gets
  personal recommendations.
- **Blend**: the session's neighbours first, then the model's precomputed list for the visitor, then the
  popular list topped up from the trending list, each item once, until `k` items (fewer only when all the
  lists run out). `"source"` says which part the first item comes from (`session`, `model` or `popular`),
  and every item says its own.
- **Never recommended**: an item the visitor bought (any transaction event), and the items of the session's
  {rules.on_screen} newest events (what the page shows or what was just carted).
- A newly promoted model answers within a few seconds, without a restart (the promoted version is re-read
  every couple of seconds and its rows loaded into memory beside the old ones, then swapped in at once;
  every answer comes from a single model version).
- Before any model is promoted (the ML job's gate found too little evidence, e.g. on a small sample), every
  visitor is answered from the popular and trending lists (`source` `popular`, `model_version` null), and
  `/health` is ok and says why no model is promoted; similar items need a promoted model (404 until then).
- `k` is 1 to {MAX_K} for recommendations and 1 to {MAX_SIMILAR_K} (the neighbours stored per item) for
  similar items; ids are non-negative integers. Anything else is answered with 422 and a message.
- 503 means PostgreSQL is unreachable or the ML job has not run yet; `/health` says which.
"""


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorResponse,
        "description": "PostgreSQL unreachable, or the ML job has not written any serving rows yet.",
    }
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ValidationErrorResponse,
        "description": "A parameter is missing, malformed or out of range.",
    }
}

UserId = Annotated[
    int, Path(ge=0, le=MAX_ID, description="Visitor id (RetailRocket `visitorid`), a non-negative integer.")
]
ItemId = Annotated[
    int, Path(ge=0, le=MAX_ID, description="Item id (RetailRocket `itemid`), a non-negative integer.")
]
K = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_K,
        description=f"How many items to return, 1 to {MAX_K}. Recommendations answer exactly k items: "
        "beyond the session's neighbours and the model's stored list for the visitor, the popular and "
        "trending lists fill up (fewer only when all of them run out).",
    ),
]
SimilarK = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_SIMILAR_K,
        description=f"How many similar items to return, 1 to {MAX_SIMILAR_K} (the neighbours the ML job "
        "stores per item); fewer when the item has fewer.",
    ),
]


def _describe(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    lines: list[str] = []
    detail: list[dict[str, Any]] = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        where = f"{loc[-1]} ({loc[0]})" if len(loc) >= 2 else ".".join(map(str, loc)) or "request"
        value = error.get("input")
        shown = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        lines.append(f"{where}: {error.get('msg', 'invalid')}, got {shown!r}")
        detail.append(
            {"loc": loc, "msg": error.get("msg", ""), "type": error.get("type", ""), "input": shown}
        )
    return "; ".join(lines), detail


def create_app(
    database_url: str,
    *,
    version_ttl_s: float = 2.0,
    pool_max_size: int = 8,
    session_rules: SessionRules | None = None,
) -> FastAPI:
    """The service over the database at `database_url` (a libpq or SQLAlchemy-style postgresql URL)."""
    store = ServingStore(
        database_url,
        version_ttl_s=version_ttl_s,
        pool_max_size=pool_max_size,
        session_rules=session_rules,
    )
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        # Everything imported and built so far lives as long as the process: move it out of the garbage
        # collector's view, so that its full collections scan only request garbage (they otherwise walk
        # hundreds of thousands of FastAPI/pydantic/psycopg objects: tens of ms, the p99 tail).
        gc.freeze()
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(
        title="clickstream-dagster recommendations",
        version="1.0.0",
        description=service_description(store.session_rules),
        lifespan=lifespan,
        # Prometheus (below) is the service's telemetry. FastAPI's OpenTelemetry hooks would look up three
        # global providers on every request even when none is configured (~50 us of a ~1 ms budget).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.store = store
    app.state.metrics = metrics
    answered = {s: metrics.recommendation_source.labels(s) for s in SOURCES}
    rules = store.session_rules

    async def answer(user_id: int, k: int) -> bytes:
        """The JSON body of a visitor's answer (RecommendationsResponse's shape, serialized once without
        pydantic objects; schemathesis checks the answers against it)."""
        answers = store.answers()  # one model for the whole answer, whatever is swapped meanwhile
        rows = visitor_rows(
            await store.session_rows(user_id), answers.recommendations, answers.similar, user_id, k, rules
        )
        source, items = blend(rows, answers.fallback, k)
        answered[source].inc()
        body = {
            "user_id": user_id,
            "source": source,
            "model_version": answers.model_version,
            "items": [
                {"rank": r, "itemid": i, "score": s, "source": f} for r, (i, s, f) in enumerate(items, 1)
            ],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = _describe(exc.errors())
        return JSONResponse({"message": message, "detail": detail}, status_code=422)

    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsResponse,
        responses={**INVALID, **UNAVAILABLE},
        tags=["recommendations"],
        summary="Top-k items for a visitor",
    )
    async def recommendations(user_id: UserId, k: K = DEFAULT_K) -> Response:
        """The promoted model's list for this visitor, led by the neighbours of the items in their live
        session, then filled from the popular list up to k; never an item they bought. A visitor the model
        does not know and who has no live session gets the popular list."""
        return Response(await answer(user_id, k), media_type="application/json")

    # Canonical requests of this route skip FastAPI (api/fastpath.py); both call `answer`.
    app.add_middleware(
        RecommendationsFastPath,
        answer=answer,
        route=next(r for r in app.routes if getattr(r, "endpoint", None) is recommendations),
        max_id=MAX_ID,
        default_k=DEFAULT_K,
        max_k=MAX_K,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: the outermost, it sees every request

    @app.get(
        "/similar-items/{item_id}",
        response_model=SimilarItemsResponse,
        responses={
            404: {
                "model": ErrorResponse,
                "description": "The promoted model does not know this item, or no model is promoted yet.",
            },
            **INVALID,
            **UNAVAILABLE,
        },
        tags=["recommendations"],
        summary="Items most similar to an item",
    )
    async def similar_items(item_id: ItemId, k: SimilarK = DEFAULT_K) -> SimilarItemsResponse | JSONResponse:
        """The k items the promoted model finds most similar to this one (cosine of LightFM's item embeddings,
        or the item neighbourhood of the other model types), most similar first."""
        answers = store.answers()
        version = answers.model_version
        if version is None:
            return JSONResponse(
                {
                    "detail": "no model is promoted yet (the popular lists answer recommendations until the "
                    "ML job's gate promotes one; /health says why): similar items need a promoted model"
                },
                status_code=404,
            )
        rows = answers.similar.get(item_id, k)
        if not rows:
            return JSONResponse(
                {
                    "detail": f"item {item_id} is not in the catalogue of model {version} (it had too few "
                    f"events in the training window, or does not exist): no similar items"
                },
                status_code=404,
            )
        return SimilarItemsResponse(
            item_id=item_id,
            model_version=version,
            items=[SimilarItem(rank=r, itemid=i, score=s) for r, (i, s) in enumerate(rows, 1)],
        )

    async def _reason() -> str | None:
        try:
            return await store.gate_reason()
        except ServiceUnavailable:
            return None

    @app.api_route(
        "/health",
        methods=["GET", "HEAD"],
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Not ready: `detail` says why."}},
        tags=["operations"],
        summary="Readiness: PostgreSQL and the served model",
    )
    async def health() -> JSONResponse:
        """200 when PostgreSQL answers and the serving rows are in memory: a promoted model's, or the popular
        lists while no model is promoted (`model_version` null, `detail` says why), else 503. Reads
        the promoted version afresh (no cache), and loads its rows first if they are not in memory yet.
        HEAD answers the same status without a body."""
        try:
            state = await store.model_state()
        except ServiceUnavailable as exc:
            body = HealthResponse(
                status="unavailable",
                postgres="unreachable",
                model_version=None,
                promoted_version=None,
                detail=str(exc),
            )
            return JSONResponse(body.model_dump(), status_code=503)
        metrics.model_version.set(state.served or 0)
        loaded = store.loaded
        metrics.answers_bytes.set(loaded.nbytes if loaded is not None else 0)
        if state.served is None:
            body = HealthResponse(
                status="unavailable",
                postgres="ok",
                model_version=None,
                promoted_version=state.promoted,
                detail=no_model_message(state),
            )
            return JSONResponse(body.model_dump(), status_code=503)
        if state.popularity:
            if state.promoted is not None:
                why = f"model {state.promoted} is promoted but its serving rows are not written yet"
            else:
                reason = await _reason()
                why = "no model is promoted" + (f" ({reason})" if reason else "")
            body = HealthResponse(
                status="ok",
                postgres="ok",
                model_version=None,
                promoted_version=state.promoted,
                detail=f"{why}: every visitor is answered from the popular and trending lists",
            )
            return JSONResponse(body.model_dump())
        detail = f"serving model {state.served}"
        if state.promoted != state.served:
            detail += f" until the serving rows of the newly promoted model {state.promoted} are written"
        body = HealthResponse(
            status="ok",
            postgres="ok",
            model_version=state.served,
            promoted_version=state.promoted,
            detail=detail,
        )
        return JSONResponse(body.model_dump())

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        summary="Prometheus metrics",
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus_metrics() -> PlainTextResponse:
        """Request counts and latency histograms per route template, answers by source, served version."""
        metrics.model_version.set(store.cached_state.served or 0)
        return PlainTextResponse(metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory: DATABASE_URL, else the embedded stack's events database."""
    return create_app(Settings.from_env().database_url)
