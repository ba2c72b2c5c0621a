"""bench/daily: the daily training job (`train_recommender`) as the daemon runs it, on real PostgreSQL, timed
by stage: data preparation, every candidate's validation evidence (each configuration fitted once), the gate,
the final fit of the best, and the serving tables. `--test-evaluation` adds the test refits of every type
(the side-by-side table), which the daily job leaves out.

It starts an embedded PostgreSQL in a temporary folder (or a scratch database on `--database-url` /
DATABASE_URL), loads the generated events into clickstream_events as ingestion would leave them, and
materializes the job's assets and the promotion gate in process (`dagster.materialize`, the job's own
in-process executor). Stage times come from the run's step events and the candidate asset's recorded
timings. The last line is the one bench/README.md records:

    daily job, <scale>: T s, promoted MODEL, ndcg@10 X (best baseline Y)

where X is the promoted model's validation estimate and Y the best other candidate's, on the same visitors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from bench.api import database, load_events
from bench.ml import generated_data
from clickstream_dagster.assets.ml import promotion_gate
from clickstream_dagster.definitions import ml_assets
from clickstream_dagster.resources import PostgresResource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", default="full", help="'full' (2,756,101), 'small' or a number of events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="a server to use")
    parser.add_argument(
        "--params-json", default="{}", help="MLParams overrides for the run, e.g. '{\"grid\": null}'"
    )
    parser.add_argument(
        "--test-evaluation",
        action="store_true",
        help="Also refit every candidate on train + validation and score it on test (the side-by-side table; "
        "not the daily job's default, so not its timing)",
    )


def run(args: argparse.Namespace) -> int:
    data_dir = generated_data(str(args.events), args.seed, getattr(args, "data_dir", None))
    events = pd.read_csv(data_dir / "events.csv")
    print(
        f"{len(events):,} events; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-daily-") as folder,
        database(args.database_url, Path(folder)) as url,
    ):
        t = time.perf_counter()
        load_events(url, events)
        print(f"loaded into clickstream_events in {time.perf_counter() - t:.1f} s", flush=True)
        del events
        os.environ["CLICKSTREAM_MODELS_DIR"] = str(Path(folder) / "models")  # not the project's models/
        started = time.perf_counter()
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [*ml_assets, promotion_gate],
            resources={"postgres": PostgresResource(url=url)},
            run_config={
                "ops": {
                    "ml_dataset": {"config": {"params_json": args.params_json}},
                    "candidate_model": {
                        "config": {"params_json": args.params_json, "test_evaluation": args.test_evaluation}
                    },
                }
            },
            instance=instance,
            raise_on_error=False,
        )
        total = time.perf_counter() - started
        _report(result, instance, url, total, str(args.events))
    return 0 if result.success else 1


def _report(
    result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, url: str, total: float, scale: str
) -> None:
    print("stages (wall seconds):")
    for stat in instance.get_run_step_stats(result.run_id):
        if stat.start_time is not None and stat.end_time is not None:
            print(f"  {stat.step_key:<32} {stat.end_time - stat.start_time:8.1f}  {stat.status}")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, model_type, status, reason, selected, metrics FROM model_registry ORDER BY version"
        ).fetchall()
    best = next((r for r in rows if r[4]), None)
    if best is None:
        print("no candidate was registered")
        return
    metrics: dict[str, Any] = best[5]
    print("inside candidate_model (seconds):")
    for name, seconds in (metrics.get("timings") or {}).items():
        print(f"  {name:<32} {seconds:8.1f}")
    metric = metrics["metric"]
    print(f"validation {metric} (mean [95 % interval], visitors):")
    estimates = {r[1]: r[5]["evidence"]["candidate"]["estimate"] for r in rows}
    for model_type, e in sorted(estimates.items(), key=lambda kv: -kv[1]["mean"]):
        print(f"  {model_type:<12} {e['mean']:.4f} [{e['low']:.4f}, {e['high']:.4f}]  {e['visitors']}")
    print(f"gate: {best[3]}")
    test = pd.DataFrame(metrics.get("test") or {}).T
    columns = [
        c
        for c in ("precision@10", "recall@10", "ndcg@10", "auc", "coverage@10", "hr@20", "mrr@20")
        if c in test
    ]
    if columns:
        print(f"test (each refitted on train + validation):\n{test[columns].to_string(float_format='%.4f')}")
    others = [e["mean"] for t, e in estimates.items() if t != best[1]]
    promoted = best[1] if best[2] == "promoted" else f"nothing ({best[1]} {best[2]})"
    print(
        f"daily job, {'full scale' if scale == 'full' else scale + ' events'}: {total:.0f} s, promoted {promoted}, "
        f"{metric} {estimates[best[1]]['mean']:.3f} (best baseline {max(others, default=float('nan')):.3f})"
    )
