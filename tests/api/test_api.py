"""The API over real HTTP, against a real PostgreSQL holding a real LightFM model's serving tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from clickstream_dagster.api import create_app
from clickstream_dagster.api.answers import load_answers
from clickstream_dagster.api.fastpath import canonical_int
from clickstream_dagster.ml.publish import write_serving_rows
from clickstream_dagster.stack.process import free_port
from tests.api.conftest import (
    POPULAR_N,
    VERSION_TTL_S,
    ApiServer,
    Served,
    TrainedModel,
    promote,
    publish,
    rebuild_serving_tables,
    register_model,
)

REC_ROUTE = "/recommendations/{user_id}"
SIMILAR_ROUTE = "/similar-items/{item_id}"


def unknown_id(ids: list[int]) -> int:
    return max(ids) + 1_000_003


def test_known_visitor_gets_the_models_list_without_purchased_items(
    served: Served, model_a: TrainedModel
) -> None:
    buyers = [v for v in model_a.purchased if model_a.recs_of(v)]
    assert len(buyers) >= 20
    for visitor in buyers[:20]:
        r = served.client.get(f"/recommendations/{visitor}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "model"
        assert body["model_version"] == served.version
        assert body["user_id"] == visitor
        items = [i["itemid"] for i in body["items"]]
        assert items == model_a.recs_of(visitor)[:10]
        assert [i["rank"] for i in body["items"]] == list(range(1, 11))
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert not set(items) & model_a.purchased[visitor], "recommended an item the visitor bought"
    visitor = buyers[0]
    five = served.client.get(f"/recommendations/{visitor}", params={"k": 5}).json()
    assert [i["itemid"] for i in five["items"]] == model_a.recs_of(visitor)[:5]
    # k beyond the stored top-N: the whole stored list, then the popular list (no live session here: the
    # test database holds no events).
    many = served.client.get(f"/recommendations/{visitor}", params={"k": 100}).json()
    stored = model_a.recs_of(visitor)
    assert many["source"] == "model"
    assert [i["itemid"] for i in many["items"]] == stored + [i for i in model_a.fallback() if i not in stored]
    assert {i["source"] for i in many["items"][len(stored) :]} == {"popular"}


def test_unknown_visitor_gets_the_popular_fallback(served: Served, model_a: TrainedModel) -> None:
    cold = unknown_id(model_a.recommendations["visitorid"].tolist())
    body = served.client.get(f"/recommendations/{cold}", params={"k": 5}).json()
    assert body["source"] == "popular"
    assert body["model_version"] == served.version
    popular = model_a.popular.loc[model_a.popular["list"] == "popular"].sort_values("rank")
    assert [i["itemid"] for i in body["items"]] == popular["itemid"].tolist()[:5]
    # Longer than the popular list: topped up from trending, without repeats.
    k = POPULAR_N + 10
    body = served.client.get(f"/recommendations/{cold}", params={"k": k}).json()
    items = [i["itemid"] for i in body["items"]]
    assert items == model_a.fallback()[:k]
    assert len(items) == len(set(items)) > POPULAR_N


def test_the_schemas_bounds_of_k_are_what_is_served(served: Served, model_a: TrainedModel) -> None:
    """What the OpenAPI schema says k can be is what is served: recommendations answer every k up to their
    maximum with exactly k items, similar items answer every k up to theirs (the neighbours stored per
    item) with k items for an item that has that many, and one more is refused with 422."""
    spec = served.client.get("/openapi.json").json()
    bounds = {}
    for path in ("/recommendations/{user_id}", "/similar-items/{item_id}"):
        [k] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "k"]
        bounds[path] = (k["schema"]["minimum"], k["schema"]["maximum"])
    assert bounds == {"/recommendations/{user_id}": (1, 100), "/similar-items/{item_id}": (1, 20)}
    cold = unknown_id(model_a.recommendations["visitorid"].tolist())
    body = served.client.get(f"/recommendations/{cold}", params={"k": 100}).json()
    # This fixture's lists are short (POPULAR_N): all of them, the whole fallback.
    assert [i["itemid"] for i in body["items"]] == model_a.fallback()[:100]
    deepest = model_a.similar.groupby("itemid").size()
    item = int(deepest[deepest == 20].index[0])
    for k in (1, 20):
        body = served.client.get(f"/similar-items/{item}", params={"k": k}).json()
        assert [i["itemid"] for i in body["items"]] == model_a.similar_to(item)[:k]
    assert served.client.get(f"/similar-items/{item}", params={"k": 21}).status_code == 422
    assert served.client.get(f"/recommendations/{cold}", params={"k": 101}).status_code == 422


def test_similar_items_and_unknown_item(served: Served, model_a: TrainedModel) -> None:
    item = int(model_a.similar["itemid"].iloc[0])
    body = served.client.get(f"/similar-items/{item}", params={"k": 7}).json()
    assert body["item_id"] == item
    assert body["model_version"] == served.version
    assert [i["itemid"] for i in body["items"]] == model_a.similar_to(item)[:7]
    assert item not in [i["itemid"] for i in body["items"]]
    missing = unknown_id(model_a.similar["itemid"].tolist())
    r = served.client.get(f"/similar-items/{missing}")
    assert r.status_code == 404
    assert r.json()["detail"] == (
        f"item {missing} is not in the catalogue of model {served.version} (it had too few events in the "
        f"training window, or does not exist): no similar items"
    )


BAD_PARAMETERS = [
    ("/recommendations/1?k=0", "k (query)", "greater than or equal to 1"),
    ("/recommendations/1?k=-3", "k (query)", "greater than or equal to 1"),
    ("/recommendations/1?k=101", "k (query)", "less than or equal to 100"),
    ("/recommendations/1?k=ten", "k (query)", "valid integer"),
    ("/recommendations/abc", "user_id (path)", "valid integer"),
    ("/recommendations/1.5", "user_id (path)", "valid integer"),
    ("/recommendations/-7", "user_id (path)", "greater than or equal to 0"),
    (f"/recommendations/{2**63}", "user_id (path)", "less than or equal to 9223372036854775807"),
    ("/similar-items/-1", "item_id (path)", "greater than or equal to 0"),
    ("/similar-items/x1", "item_id (path)", "valid integer"),
    ("/similar-items/5?k=21", "k (query)", "less than or equal to 20"),
]


def test_bad_parameters_are_422_with_a_message(served: Served) -> None:
    for path, name, fragment in BAD_PARAMETERS:
        r = served.client.get(path)
        assert r.status_code == 422, (path, r.text)
        body = r.json()
        assert body["message"].startswith(f"{name}: "), (path, body)
        assert fragment in body["message"], (path, body)
        assert body["detail"][0]["loc"][-1] == name.split()[0], (path, body)
    body = served.client.get("/recommendations/-7?k=500").json()
    assert body["message"] == (
        "user_id (path): Input should be greater than or equal to 0, got '-7'; "
        "k (query): Input should be less than or equal to 100, got '500'"
    )


def test_health_reports_postgres_and_the_served_model(served: Served) -> None:
    r = served.client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "postgres": "ok",
        "model_version": served.version,
        "promoted_version": served.version,
        "detail": f"serving model {served.version}",
    }


def test_before_the_ml_job_ran_health_and_answers_are_503(
    database_factory: Callable[..., str],
    model_a: TrainedModel,
    api_server_factory: Callable[[FastAPI], ApiServer],
) -> None:
    """Nothing promoted and no popular lists written: the ML job has not run, 503 says to run it."""
    url = database_factory()
    register_model(url, model_a)  # a candidate only
    server = api_server_factory(create_app(url, version_ttl_s=VERSION_TTL_S))
    with httpx.Client(base_url=server.url) as client:
        r = client.get("/health")
        assert r.status_code == 503
        body = r.json()
        assert (body["status"], body["postgres"], body["model_version"]) == ("unavailable", "ok", None)
        assert "no model is promoted" in body["detail"]
        r = client.get("/recommendations/1")
        assert r.status_code == 503
        assert r.json()["detail"].startswith(
            "no model is promoted and no popular lists are written yet: run the ML job"
        )


def test_popular_lists_answer_everyone_until_a_model_is_promoted(
    database_factory: Callable[..., str],
    model_a: TrainedModel,
    api_server_factory: Callable[[FastAPI], ApiServer],
) -> None:
    """The ML job's gate found too little evidence and wrote the popular lists only (version 0): /health is
    ok and says why, every visitor gets the popular list, a re-written list is served within the TTL, and a
    model promoted later takes over."""
    url = database_factory()
    candidate = register_model(url, model_a)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE model_registry SET status = 'rejected', reason = %s WHERE version = %s",
            ("insufficient evidence: 2 validation visitors (minimum 200); popularity stays", candidate),
        )
        write_serving_rows(conn, "popular_items", model_a.popular, 0)
    server = api_server_factory(create_app(url, version_ttl_s=VERSION_TTL_S))
    known = int(model_a.recommendations["visitorid"].iloc[0])
    with httpx.Client(base_url=server.url) as client:
        health = client.get("/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert (body["status"], body["model_version"], body["promoted_version"]) == ("ok", None, None)
        assert body["detail"] == (
            f"no model is promoted (model v{candidate}: insufficient evidence: 2 validation visitors "
            "(minimum 200); popularity stays): every visitor is answered from the popular and trending lists"
        )
        answer = client.get(f"/recommendations/{known}", params={"k": 5}).json()
        assert (answer["source"], answer["model_version"]) == ("popular", None)
        bought = model_a.purchased.get(known, set())
        assert [i["itemid"] for i in answer["items"]] == [i for i in model_a.fallback() if i not in bought][
            :5
        ]

        # The next training run, still without evidence, re-writes the lists: served without a restart.
        reordered = model_a.popular.assign(
            rank=lambda f: f.groupby("list")["rank"].transform("max") + 1 - f["rank"]
        )
        with psycopg.connect(url) as conn:
            write_serving_rows(conn, "popular_items", reordered, 0)
        first_now = reordered.sort_values(["list", "rank"]).query("list == 'popular'")["itemid"].iloc[0]
        deadline = time.monotonic() + 10
        while (
            client.get("/recommendations/123456789", params={"k": 1}).json()["items"][0]["itemid"]
            != first_now
        ):
            assert time.monotonic() < deadline, "the re-written popular lists were not served"
            time.sleep(0.1)

        version = publish(url, model_a)
        _wait_for_version(client, f"/recommendations/{known}", version, timeout=10)
        assert client.get("/health").json()["model_version"] == version


def test_postgres_down_is_503_with_a_message(
    api_server_factory: Callable[[FastAPI], ApiServer],
) -> None:
    port = free_port()  # nothing listens there
    server = api_server_factory(create_app(f"postgresql://postgres@127.0.0.1:{port}/clickstream"))
    with httpx.Client(base_url=server.url, timeout=20) as client:
        r = client.get("/health")
        assert r.status_code == 503
        body = r.json()
        assert (body["status"], body["postgres"], body["model_version"]) == (
            "unavailable",
            "unreachable",
            None,
        )
        assert body["detail"].startswith(
            f"PostgreSQL not reachable at postgresql://postgres@127.0.0.1:{port}"
        )
        assert "run `clickstream up` or set DATABASE_URL" in body["detail"]
        r = client.get("/similar-items/3")
        assert r.status_code == 503
        assert "PostgreSQL not reachable" in r.json()["detail"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_and_time_requests_per_route_template(served: Served, model_a: TrainedModel) -> None:
    visitor = int(model_a.recommendations["visitorid"].iloc[0])
    cold = unknown_id(model_a.recommendations["visitorid"].tolist())
    for _ in range(3):
        assert served.client.get(f"/recommendations/{visitor}").status_code == 200
    for _ in range(2):
        assert served.client.get(f"/recommendations/{cold}").status_code == 200
    assert served.client.get("/recommendations/1?k=0").status_code == 422
    item = int(model_a.similar["itemid"].iloc[0])
    assert served.client.get(f"/similar-items/{item}").status_code == 200
    assert served.client.get("/no-such-route/1").status_code == 404
    assert served.client.get("/health").status_code == 200
    head = served.client.head("/health")
    assert (head.status_code, head.content) == (200, b"")  # HEAD answers (not 405), without a body
    assert served.client.get("/openapi.json").status_code == 200
    assert served.client.get("/docs").status_code == 200

    r = served.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)

    def count(route: str, status: str) -> float:
        return m.get(
            ("clickstream_api_requests_total", (("method", "GET"), ("route", route), ("status", status))), 0
        )

    assert count(REC_ROUTE, "200") == 5
    assert count(REC_ROUTE, "422") == 1
    assert count(SIMILAR_ROUTE, "200") == 1
    assert count("unmatched", "404") == 1  # the unknown route only: the docs have their own labels
    assert count("/health", "200") == 1
    assert count("/openapi.json", "200") == 1 and count("/docs", "200") == 1
    assert (
        m[("clickstream_api_requests_total", (("method", "HEAD"), ("route", "/health"), ("status", "200")))]
        == 1
    )
    # The served model's lists in memory: 12 bytes a row and 16 a visitor or item, at least.
    rows = len(model_a.recommendations) + len(model_a.similar)
    assert m[("clickstream_api_model_answers_bytes", ())] >= 12 * rows
    hist = "clickstream_api_request_duration_seconds"
    assert m[(f"{hist}_count", (("method", "GET"), ("route", REC_ROUTE)))] == 6
    assert m[(f"{hist}_count", (("method", "GET"), ("route", SIMILAR_ROUTE)))] == 1
    assert m[(f"{hist}_bucket", (("le", "+Inf"), ("method", "GET"), ("route", REC_ROUTE)))] == 6
    assert 0 < m[(f"{hist}_sum", (("method", "GET"), ("route", REC_ROUTE)))] < 6
    assert m[("clickstream_api_recommendations_total", (("source", "model"),))] == 3
    assert m[("clickstream_api_recommendations_total", (("source", "popular"),))] == 2
    assert m[("clickstream_api_model_version", ())] == served.version
    # Raw paths never become labels.
    assert f"/recommendations/{visitor}" not in r.text
    # The scrape itself is counted from the next scrape on.
    again = _samples(served.client.get("/metrics").text)
    assert (
        again[
            ("clickstream_api_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))
        ]
        == 1
    )


def test_docs_and_openapi_describe_every_route(served: Served) -> None:
    docs = served.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    spec = served.client.get("/openapi.json").json()
    assert set(spec["paths"]) == {REC_ROUTE, SIMILAR_ROUTE, "/health", "/metrics"}
    rec = spec["paths"][REC_ROUTE]["get"]
    assert rec["description"].startswith("The promoted model's list for this visitor")
    assert rec["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RecommendationsResponse"
    )
    assert {"200", "422", "503"} <= set(rec["responses"])
    k = next(p for p in rec["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"], k["schema"]["default"]) == (1, 100, 10)
    assert k["description"]
    user = next(p for p in rec["parameters"] if p["name"] == "user_id")
    assert user["schema"]["minimum"] == 0 and user["description"]
    assert "404" in spec["paths"][SIMILAR_ROUTE]["get"]["responses"]
    schemas = spec["components"]["schemas"]
    source = schemas["RecommendationsResponse"]["properties"]["source"]
    assert source["enum"] == ["session", "model", "popular"] and source["description"]


def _wait_for_version(client: httpx.Client, path: str, version: int, timeout: float) -> tuple[float, dict]:
    started = time.monotonic()
    while True:
        body = client.get(path).json()
        if body["model_version"] == version:
            return time.monotonic() - started, body
        assert time.monotonic() - started < timeout, f"still serving {body['model_version']}, not {version}"
        time.sleep(0.02)


def test_a_newly_promoted_model_is_served_without_restart(
    served: Served, model_a: TrainedModel, model_b: TrainedModel
) -> None:
    visitor = next(
        v
        for v in model_b.recommendations["visitorid"].unique().tolist()
        if model_a.recs_of(v) != model_b.recs_of(v)
    )
    path = f"/recommendations/{visitor}"
    before = served.client.get(path).json()
    assert [i["itemid"] for i in before["items"]] == model_a.recs_of(visitor)[:10]

    # Promoted, but its serving rows are not written yet: the previous model keeps answering.
    version_b = register_model(served.url, model_b)
    promote(served.url, version_b)
    time.sleep(VERSION_TTL_S * 2)
    assert served.client.get(path).json()["model_version"] == served.version
    health = served.client.get("/health").json()
    assert (health["status"], health["model_version"], health["promoted_version"]) == (
        "ok",
        served.version,
        version_b,
    )

    # The rows land (one transaction): the running service switches within the TTL.
    rebuild_serving_tables(served.url, version_b, model_b)
    waited, after = _wait_for_version(served.client, path, version_b, timeout=VERSION_TTL_S + 2)
    assert waited <= VERSION_TTL_S + 1.0
    assert after["source"] == "model"
    assert [i["itemid"] for i in after["items"]] == model_b.recs_of(visitor)[:10]
    cold = served.client.get("/recommendations/999999999").json()
    assert (cold["source"], cold["model_version"]) == ("popular", version_b)
    item = int(model_b.similar["itemid"].iloc[0])
    similar = served.client.get(f"/similar-items/{item}").json()
    assert [i["itemid"] for i in similar["items"]] == model_b.similar_to(item)[:10]

    # And back to model_a as a third version, published the usual way.
    version_c = publish(served.url, model_a)
    _, again = _wait_for_version(served.client, path, version_c, timeout=VERSION_TTL_S + 2)
    assert [i["itemid"] for i in again["items"]] == model_a.recs_of(visitor)[:10]


def test_no_model_is_served_when_its_rows_are_gone(served: Served) -> None:
    """The promoted model's rows disappear (tables truncated): 503, not an empty or mixed answer."""
    with psycopg.connect(served.url) as conn:
        conn.execute("DELETE FROM popular_items")
        conn.execute("DELETE FROM recommendations")
    deadline = time.monotonic() + VERSION_TTL_S + 2
    while (r := served.client.get("/recommendations/5")).status_code != 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.02)
    assert "serving rows" in r.json()["detail"]
    assert served.client.get("/health").status_code == 503


def test_the_entry_point_serves_database_url_with_workers(served: Served, model_a: TrainedModel) -> None:
    """`python -m clickstream_dagster.api` with two workers: /metrics adds up both workers' requests."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["DATABASE_URL"] = served.url
    argv = ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickstream_dagster.api", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not come up"
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.json()["model_version"] == served.version
        visitor = int(model_a.recommendations["visitorid"].iloc[0])
        for _ in range(20):  # new connections each: the kernel spreads them over the workers
            assert httpx.get(f"http://127.0.0.1:{port}/recommendations/{visitor}").json()["source"] == "model"
        m = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        key = (("method", "GET"), ("route", REC_ROUTE), ("status", "200"))
        assert m[("clickstream_api_requests_total", key)] == 20
        assert (
            m[("clickstream_api_request_duration_seconds_count", (("method", "GET"), ("route", REC_ROUTE)))]
            == 20
        )
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (so the exit status is -15).
    assert "Application shutdown complete" in output.decode(), output.decode()
    assert proc.returncode in (0, -signal.SIGTERM)


def test_a_model_switch_under_concurrent_load_never_fails_or_mixes_models(
    served: Served, model_a: TrainedModel, model_b: TrainedModel
) -> None:
    """Eight clients ask for known visitors without pause while model_b is published and swapped in: every
    answer is a 200, and every item of it comes from the one model version the answer names."""
    visitors = [
        v
        for v in model_b.recommendations["visitorid"].unique().tolist()
        if model_a.recs_of(v) and model_b.recs_of(v) and model_a.recs_of(v)[:10] != model_b.recs_of(v)[:10]
    ][:200]
    assert len(visitors) >= 50
    answers: list[tuple[int, int, dict]] = []  # (visitor, status, body)
    stop = threading.Event()

    def hammer(offset: int) -> None:
        with httpx.Client(base_url=served.base_url, timeout=10) as client:
            i = offset
            while not stop.is_set():
                visitor = visitors[i % len(visitors)]
                r = client.get(f"/recommendations/{visitor}")
                answers.append((visitor, r.status_code, r.json()))
                i += 1

    threads = [threading.Thread(target=hammer, args=(n * 25,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        version_b = publish(served.url, model_b)
        _wait_for_version(
            served.client, f"/recommendations/{visitors[0]}", version_b, timeout=VERSION_TTL_S + 5
        )
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    lists = {served.version: model_a, version_b: model_b}
    assert [s for _, s, _ in answers if s != 200] == []
    seen = {body["model_version"] for _, _, body in answers}
    assert seen == {served.version, version_b}, seen  # both models answered during the run
    for visitor, _, body in answers:
        trained = lists[body["model_version"]]
        items = [i["itemid"] for i in body["items"]]
        assert {i["source"] for i in body["items"]} == {"model"}, body
        assert items == trained.recs_of(visitor)[:10], (visitor, body["model_version"])
    assert len(answers) > 200


def test_the_fast_path_answers_exactly_what_fastapi_answers(served: Served, model_a: TrainedModel) -> None:
    """Canonical requests skip FastAPI (api/fastpath.py); the same request in another spelling goes through
    FastAPI's route: the bodies are byte for byte the same, known, cold and k=1..100 alike."""
    visitors = model_a.recommendations["visitorid"].unique().tolist()[:20]
    cold = unknown_id(model_a.recommendations["visitorid"].tolist())
    for visitor in [*visitors, cold]:
        for k in (1, 10, 100):
            fast = served.client.get(f"/recommendations/{visitor}?k={k}")
            slow = served.client.get(f"/recommendations/{visitor}", params={"k": k, "via": "fastapi"})
            assert (fast.status_code, slow.status_code) == (200, 200)
            assert fast.content == slow.content
            assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert (
        served.client.get(f"/recommendations/{visitors[0]}").content
        == served.client.get(f"/recommendations/0{visitors[0]}").content
    )  # the default k; a leading zero goes through FastAPI


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("7", 7), ("9223372036854775807", 2**63 - 1), ("9223372036854775808", None), ("007", None),
     ("", None), ("-1", None), ("+1", None), ("1.0", None), ("\u0661", None), (" 1", None)],
)  # fmt: skip
def test_canonical_ids(text: str, expected: int | None) -> None:
    assert canonical_int(text, 2**63 - 1) == expected
    assert canonical_int(text.encode(), 2**63 - 1) == expected


def test_load_answers_holds_every_row_of_one_version(served: Served, model_a: TrainedModel) -> None:
    """The lists in memory are the stored rows, all of them, in rank order; a connection already inside a
    transaction is refused (the load's snapshot must be its own)."""
    with psycopg.connect(served.url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(ValueError, match="outside any transaction"):
            load_answers(conn, served.version)
        conn.rollback()
        answers = load_answers(conn, served.version)
    assert answers.version == served.version
    assert answers.recommendations.rows == len(model_a.recommendations)
    assert answers.similar.rows == len(model_a.similar)
    for visitor in model_a.recommendations["visitorid"].unique().tolist()[:50]:
        assert [i for i, _ in answers.recommendations.get(visitor)] == model_a.recs_of(visitor)
    assert [i for i, _ in answers.fallback] == model_a.fallback()
    assert answers.recommendations.get(unknown_id(model_a.recommendations["visitorid"].tolist())) == []
