"""`python -m clickstream_dagster.api [--host H] [--port P] [--workers N]`: serve the API with uvicorn.

The database is DATABASE_URL, else the embedded stack's events database (see Settings.database_url).
"""

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import uvicorn

from clickstream_dagster.logs import dict_config
from clickstream_dagster.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    default_port = Settings.from_env().ports.api
    parser = argparse.ArgumentParser(prog="python -m clickstream_dagster.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"port (default: CLICKSTREAM_API_PORT or {default_port})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default: 1). With more, /metrics sums all workers through "
        "PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder unless set)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs throughput)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before any worker imports prometheus_client (it picks its storage at import time).
        metrics_dir = tempfile.mkdtemp(prefix="clickstream-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # The factory reads DATABASE_URL in each worker; uvloop and httptools are used when installed.
    uvicorn.run(
        "clickstream_dagster.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=dict_config("api", args.log_level.upper()),  # CLICKSTREAM_LOG_FORMAT=json: JSON lines
        access_log=args.access_log,
        loop="auto",
        http="auto",
    )
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
