"""bench/ml: the recommender on the full generated dataset (2.76M events): data preparation time, LightFM's
training time per epoch and in total, and peak memory, next to the same figures for every baseline (the
best by test NDCG@10 is named), all fitted in one process on the same folds.

Data preparation is what the `ml_dataset` asset and the test fold do: read the CSVs, clean (missing values,
duplicates, bots), cut the time split, build the train + validation interactions, the matrix and LightFM's
item features. Each model is then fitted on that matrix and scored on the test split. Memory is the
process's resident set: its peak during the fit, and that peak minus the resident set before the fit.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from clickstream_dagster.data.generator import generate, parse_scale
from clickstream_dagster.ml.config import LightFMParams, MLParams
from clickstream_dagster.ml.evaluate import PeakRSS, evaluate_model, make_fold, run_full_evaluation
from clickstream_dagster.ml.models import (
    ItemKNNRecommender,
    LightFMRecommender,
    PopularityRecommender,
    Recommender,
    UserKNNRecommender,
)
from clickstream_dagster.ml.prep import clean_events, read_csv_dir
from clickstream_dagster.ml.split import time_split
from clickstream_dagster.stack.config import project_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", default="full", help="'full' (2,756,101), 'small' or a number of events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Folder with the four CSVs (default: generated into .cache/bench-ml/<events>)",
    )
    parser.add_argument("--epochs", type=int, default=LightFMParams().epochs)
    parser.add_argument("--components", type=int, default=LightFMParams().no_components)
    parser.add_argument(
        "--max-eval-users", type=int, default=20_000, help="Test visitors sampled for the metrics (0: all)"
    )
    parser.add_argument("--skip-user-knn", action="store_true", help="User-based CF is the slowest baseline")
    parser.add_argument(
        "--evaluation-table",
        action="store_true",
        help="Instead: the whole evaluation (validation grid, every metric, next-item HR/MRR@20) as one "
        "markdown table, as in docs/recommendations.md",
    )


def generated_data(events: str, seed: int, data_dir: Path | None = None) -> Path:
    """`data_dir`, or the folder of `events` generated events (seed `seed`) under .cache/bench-ml, generated
    on first use: the data every ML benchmark shares."""
    scale = parse_scale(events)
    data_dir = data_dir or project_root() / ".cache" / "bench-ml" / str(scale)
    if not (data_dir / "events.csv").is_file():
        print(f"generating {scale} events into {data_dir} ...", flush=True)
        generate(data_dir, scale, seed=seed)
    return data_dir


def run(args: argparse.Namespace) -> int:
    data_dir = generated_data(str(args.events), args.seed, args.data_dir)
    params = MLParams.from_dict(
        {"grid": None, "lightfm": {"epochs": args.epochs, "no_components": args.components}}
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.evaluation_table:
        return _evaluation_table(data_dir)

    started = time.perf_counter()
    with PeakRSS() as prep_memory:
        t = time.perf_counter()
        events, items = read_csv_dir(data_dir)
        read_seconds = time.perf_counter() - t
        cleaned, _ = clean_events(events, params.cleaning)
        split = time_split(cleaned, params.split)
        fold = make_fold("test", split.train_and_validation, split.test, items, params)
        del events
    prep_seconds = time.perf_counter() - started
    print(
        f"data preparation: {prep_seconds:.1f} s (CSV read {read_seconds:.1f} s), peak RSS "
        f"{prep_memory.peak_mb:.0f} MB; {len(cleaned):,} events after cleaning, matrix "
        f"{fold.data.matrix.shape[0]:,} x {fold.data.matrix.shape[1]:,} with "
        f"{fold.data.matrix.weights.nnz:,} interactions; {len(fold.eval_users):,} test visitors",
        flush=True,
    )

    models: dict[str, Recommender] = {
        "lightfm": LightFMRecommender(replace(params.lightfm)),
        "popularity": PopularityRecommender(),
        "item_knn": ItemKNNRecommender(params.knn),
    }
    if not args.skip_user_knn:
        models["user_knn"] = UserKNNRecommender(params.knn)
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        gc.collect()
        before = psutil.Process().memory_info().rss / 2**20
        with PeakRSS() as memory:
            model.fit(fold.data.matrix, fold.data.item_features)
        t = time.perf_counter()
        metrics = evaluate_model(model, fold, params.k, args.max_eval_users or None, args.seed)
        epochs = getattr(model, "epoch_seconds", [])
        row = {
            "model": name,
            "fit_s": model.fit_seconds,
            "s_per_epoch": sum(epochs) / len(epochs) if epochs else None,
            "epochs": len(epochs) or None,
            "peak_rss_mb": memory.peak_mb,
            "fit_extra_mb": memory.peak_mb - before,
            "eval_s": time.perf_counter() - t,
            f"recall@{params.k}": metrics["recall"],
            f"ndcg@{params.k}": metrics["ndcg"],
        }
        rows.append(row)
        print(_line(row), flush=True)
        if name != "lightfm":
            models[name] = PopularityRecommender()  # free the baseline's memory before the next one

    table = pd.DataFrame(rows)
    baselines = table[table["model"] != "lightfm"]
    best = baselines.sort_values(f"ndcg@{params.k}", ascending=False).iloc[0]
    lightfm = table[table["model"] == "lightfm"].iloc[0]
    print()
    print(table.to_markdown(index=False, floatfmt=".4g"))
    print()
    print(
        f"best baseline by ndcg@{params.k}: {best['model']}; LightFM/{best['model']}: "
        f"fit time {lightfm['fit_s'] / best['fit_s']:.2f}x, fit extra memory "
        f"{lightfm['fit_extra_mb'] / max(best['fit_extra_mb'], 1.0):.2f}x, ndcg "
        f"{lightfm[f'ndcg@{params.k}'] / max(best[f'ndcg@{params.k}'], 1e-12):.2f}x; "
        f"data preparation {prep_seconds:.1f} s shared by all; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return 0


def _evaluation_table(data_dir: Path) -> int:
    events, items = read_csv_dir(data_dir)
    table, timings, peak_mb = run_full_evaluation(events, items)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(f"\n{len(events):,} events; {timings['total']:.0f} s in all, peak RSS {peak_mb:.0f} MB", flush=True)
    return 0


def _line(row: dict[str, Any]) -> str:
    per_epoch = f", {row['s_per_epoch']:.2f} s/epoch x {row['epochs']}" if row["s_per_epoch"] else ""
    return (
        f"{row['model']}: fit {row['fit_s']:.1f} s{per_epoch}, peak RSS {row['peak_rss_mb']:.0f} MB "
        f"(+{row['fit_extra_mb']:.0f} MB during fit), eval {row['eval_s']:.1f} s, "
        f"recall {row[next(k for k in row if k.startswith('recall'))]:.4f}, "
        f"ndcg {row[next(k for k in row if k.startswith('ndcg'))]:.4f}"
    )
