"""The hot path without the framework: `GET /recommendations/{user_id}` in its canonical form answered by a
pure ASGI middleware, before FastAPI's routing, parameter validation and response machinery.

Only requests whose parameters are plainly valid take it: `user_id` a canonical non-negative integer
(digits, no sign or leading zero) up to the bigint maximum, and no query string or exactly `k=<n>` with n
canonical and in range. Everything else goes to FastAPI unchanged, which validates it, answers the 422s and
documents the route; both paths call the same `answer`, so their bodies are byte for byte the same
(tests/api/test_api.py compares them). The matched route is put in the scope as FastAPI's router would, so
`MetricsMiddleware` labels the request by its template.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from clickstream_dagster.api.store import ServiceUnavailable

PREFIX = "/recommendations/"
JSON = (b"content-type", b"application/json")


def canonical_int(text: str | bytes, maximum: int) -> int | None:
    """`text` as an integer when it is written the one canonical way (ASCII digits, no sign, no leading
    zero) and at most `maximum`; else None."""
    if not text or len(text) > 19 or not text.isdigit() or not text.isascii():
        return None
    if (text[0] in ("0", 48)) and len(text) > 1:  # str or bytes
        return None
    value = int(text)
    return value if value <= maximum else None


class RecommendationsFastPath:
    def __init__(
        self,
        app: ASGIApp,
        answer: Callable[[int, int], Awaitable[bytes]],
        route: object,
        max_id: int,
        default_k: int,
        max_k: int,
    ) -> None:
        self.app = app
        self.answer = answer
        self.route = route
        self.max_id, self.default_k, self.max_k = max_id, default_k, max_k

    def _parameters(self, scope: Scope) -> tuple[int, int] | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX):
            return None
        user = canonical_int(path[len(PREFIX) :], self.max_id)
        if user is None:
            return None
        query: bytes = scope.get("query_string", b"")
        if not query:
            return user, self.default_k
        if not query.startswith(b"k="):
            return None
        k = canonical_int(query[2:], self.max_k)
        return (user, k) if k is not None and k >= 1 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parameters = self._parameters(scope) if scope["type"] == "http" else None
        if parameters is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            status, body = 200, await self.answer(*parameters)
        except ServiceUnavailable as exc:  # as the app's exception handler answers it
            status, body = 503, json.dumps({"detail": str(exc)}).encode()
        headers = [JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
