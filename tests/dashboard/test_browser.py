"""The dashboard in a real headless Chromium (Debian's, driven by playwright), served by `streamlit run` on real
data. Leaves a full-page screenshot in test-artifacts/dashboard.png."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.stack.process import free_port, wait_until
from tests.analytics import sessions_reference as ref
from tests.dashboard.conftest import APP, ROOT, FilledStack
from tests.dashboard.filler import LAGS

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
# windowed stats, event types, hourly pattern, top items; funnel, retention, sessions over time, converting
# items, viewed items, categories; Kafka lag, quarantine; model metrics
CHARTS = 13


@pytest.fixture
def dashboard_url(filled_stack: FilledStack, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": filled_stack.events_url,
        "CLICKSTREAM_DAGSTER_URL": filled_stack.dagster_url,
        "CLICKSTREAM_DASHBOARD_REFRESH_SECONDS": "5",
    }
    log = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok"
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, "streamlit", alive=lambda: process.poll() is None, on_fail=log.read_text)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def metric(page: Page, label: str) -> str:
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).first.inner_text()


def test_dashboard_in_a_real_browser(dashboard_url: str, filled_stack: FilledStack) -> None:
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: run scripts/install-system.sh (installs Debian chromium)"
    )
    counts = filled_stack.filled.counts
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(dashboard_url)
            page.get_by_text("Recommendation explorer", exact=True).first.wait_for(timeout=120_000)
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {CHARTS}", timeout=120_000
            )
            # every chart drew marks: plotly's SVG bars or line paths with data
            page.wait_for_function(
                """() => [...document.querySelectorAll('.js-plotly-plot')].every(
                       el => el.querySelectorAll('.trace .point, .trace path.js-line, .trace path.js-fill, .hm image').length > 0)""",
                timeout=60_000,
            )

            # the artefact first, so a failing assertion below still leaves it to look at
            ARTIFACTS.mkdir(exist_ok=True)
            height = page.evaluate(
                "Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')]"
                ".map(e => e.scrollHeight), document.body.scrollHeight)"
            )
            page.set_viewport_size({"width": 1440, "height": int(height) + 40})
            page.wait_for_timeout(1500)  # charts re-layout to the new size
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            assert f"{sum(counts.values()):,}" in metric(page, "Events ingested")
            assert metric(page, "Kafka lag").strip().endswith(f"{LAGS[-1]:,}")
            assert "3 of 3" in metric(page, "Offset ranges reconciled")
            assert page.locator('[data-testid="stException"]').count() == 0

            # the figures hold the database's numbers
            traces = page.evaluate(
                """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(
                       el => el._fullData.map(t => ({name: t.name || '', x: Array.from(t.x || []), y: Array.from(t.y || [])})))"""
            )
            frequency = next(t for t in traces if t["x"] == ["views", "add-to-carts", "transactions"])
            assert frequency["y"] == [counts["view"], counts["addtocart"], counts["transaction"]]
            # the funnel and the sessions' figures are the pandas recomputation's
            expected = ref.recompute(
                filled_stack.filled.events, filled_stack.filled.categories, session_gap_ms()
            )
            flags = expected["sessions"].assign(
                v=lambda f: f["views"] > 0, c=lambda f: f["addtocarts"] > 0, b=lambda f: f["transactions"] > 0
            )
            funnel = next(t for t in traces if t["y"] == ["viewed", "…added to cart", "…and bought"])
            assert funnel["x"] == [
                int(flags["v"].sum()),
                int((flags["v"] & flags["c"]).sum()),
                int((flags["v"] & flags["c"] & flags["b"]).sum()),
            ]
            assert f"{len(expected['sessions']):,}" in metric(page, "Sessions")
            lag = next(t for t in traces if t["y"] == list(LAGS))
            assert len(lag["x"]) == len(LAGS)
            assert sum(len(t["y"]) for t in traces) > 500

        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 50_000
