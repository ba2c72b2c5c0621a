"""bench/lightfm: LightFM's fair chance. On the daily job's validation fold (train = the first 70 % of the
cleaned events, scored on the next 15 %, the same 5,000 sampled visitors as the gate), one factor at a time
from a fixed reference (the defaults before #18): loss, learning rate, components, regularisation, negative
sampling, sample weights and item features, each trained with early stopping (scored every 5 epochs, stopped after 2
checkpoints without progress, at most `--max-epochs`). User-based CF, the best baseline at full scale, is
scored on the same visitors in the same run: the peer.

The table it prints is docs/recommendations.md's "LightFM's fair chance"; the grid the daily job searches
(`GridConfig`'s defaults) is chosen from it.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.ml import generated_data
from clickstream_dagster.ml.config import FeatureConfig, GridConfig, MLParams
from clickstream_dagster.ml.evaluate import Fold, evaluate_model, make_fold, select_lightfm_with_evidence
from clickstream_dagster.ml.models import UserKNNRecommender
from clickstream_dagster.ml.prep import clean_events, read_csv_dir
from clickstream_dagster.ml.split import time_split

# Every variant is a change to one fixed reference, the defaults before this study (#18): WARP, learning rate
# 0.05, 64 components, item_alpha 1e-6, 10 negatives sampled, log1p sample weights, categories weighing 0.25
# and availability 0.1 beside each item's identity. Today's defaults are the last variant.
REFERENCE_LIGHTFM: dict[str, Any] = {
    "loss": "warp", "learning_rate": 0.05, "no_components": 64, "item_alpha": 1e-6, "max_sampled": 10,
    "sample_weight": "log1p",
}  # fmt: skip
REFERENCE_FEATURES: dict[str, Any] = {
    "identity_weight": 1.0,
    "category_weight": 0.25,
    "availability_weight": 0.1,
}

# name -> (changes to the reference LightFMParams, changes to the reference FeatureConfig)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference (warp, lr 0.05, 64 components, item_alpha 1e-6, max_sampled 10, categories 0.25)": ({}, {}),
    "loss bpr": ({"loss": "bpr"}, {}),
    "loss warp-kos (no sample weights)": (
        {"loss": "warp-kos", "sample_weight": "none"},
        {},
    ),
    "learning rate 0.025": ({"learning_rate": 0.025}, {}),
    "learning rate 0.1": ({"learning_rate": 0.1}, {}),
    "32 components": ({"no_components": 32}, {}),
    "128 components": ({"no_components": 128}, {}),
    "item_alpha 0": ({"item_alpha": 0.0}, {}),
    "max_sampled 30": ({"max_sampled": 30}, {}),
    "sample weight none": ({"sample_weight": "none"}, {}),
    "features: item identity only": ({}, {"category_weight": 0.0, "availability_weight": 0.0}),
    "features: category weight 1.0": ({}, {"category_weight": 1.0}),
}
# The same factors again around the winner of the first pass at full scale (item identity only).
IDENTITY = {"category_weight": 0.0, "availability_weight": 0.0}
VARIANTS.update(
    {
        "identity only, 32 components": ({"no_components": 32}, IDENTITY),
        "identity only, 128 components": ({"no_components": 128}, IDENTITY),
        "identity only, learning rate 0.1": ({"learning_rate": 0.1}, IDENTITY),
        "identity only, item_alpha 0": ({"item_alpha": 0.0}, IDENTITY),
        "identity only, max_sampled 30": ({"max_sampled": 30}, IDENTITY),
        "identity only, warp-kos": ({"loss": "warp-kos", "sample_weight": "none"}, IDENTITY),
        "identity only, sample weight none": ({"sample_weight": "none"}, IDENTITY),
        "identity only, 128 components, max_sampled 30": (
            {"no_components": 128, "max_sampled": 30},
            IDENTITY,
        ),
        "identity only, 64 components, max_sampled 50": ({"max_sampled": 50}, IDENTITY),
        "today's defaults (identity only, max_sampled 30, 64 components)": (
            {
                "max_sampled": MLParams().lightfm.max_sampled,
                "no_components": MLParams().lightfm.no_components,
            },
            {k: getattr(MLParams().features, k) for k in REFERENCE_FEATURES},
        ),
    }
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", default="full", help="'full' (2,756,101), 'small' or a number of events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="Folder with the CSVs (default: generated)"
    )
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--only", action="append", default=None, help="Run only the variants named (repeat)")


def run(args: argparse.Namespace) -> int:
    data_dir = generated_data(str(args.events), args.seed, getattr(args, "data_dir", None))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    events, items = read_csv_dir(data_dir)
    base = MLParams()
    cleaned, _ = clean_events(events, base.cleaning)
    split = time_split(cleaned, base.split)
    del events
    grid = replace(
        GridConfig(), no_components=(0,), learning_rate=(0.0,), item_alpha=(0.0,),
        epochs=tuple(range(5, args.max_epochs + 1, 5)), patience=2, max_seconds=float("inf"),
    )  # fmt: skip
    folds: dict[FeatureConfig, Fold] = {}
    rows: list[dict[str, Any]] = []

    def fold_for(features: FeatureConfig) -> Fold:
        if features not in folds:
            folds[features] = make_fold(
                "validation", split.train, split.validation, items, replace(base, features=features)
            )
        return folds[features]

    peer_fold = fold_for(replace(base.features, **REFERENCE_FEATURES))
    t = time.perf_counter()
    peer = UserKNNRecommender(base.knn).fit(peer_fold.data.matrix)
    scores = evaluate_model(peer, peer_fold, grid.k, grid.max_eval_users, base.seed, with_auc=False)
    peer_ndcg = scores["ndcg"]
    print(f"peer: user_knn ndcg@10 {peer_ndcg:.4f} on {int(scores['users']):,} visitors "
          f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    unknown = set(args.only or ()) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; known: {list(VARIANTS)}")
    for name in args.only or VARIANTS:  # in the order asked
        lightfm_changes, feature_changes = VARIANTS[name]
        params = replace(base.lightfm, **{**REFERENCE_LIGHTFM, **lightfm_changes})
        features = replace(base.features, **{**REFERENCE_FEATURES, **feature_changes})
        one = replace(grid, no_components=(params.no_components,), learning_rate=(params.learning_rate,),
                      item_alpha=(params.item_alpha,))  # fmt: skip
        t = time.perf_counter()
        selection = select_lightfm_with_evidence(fold_for(features), one, params, base.seed)
        table = selection.table
        row = {
            "variant": name,
            "ndcg@10": selection.scores["ndcg@10"],
            "recall@10": selection.scores["recall@10"],
            "vs user_knn": selection.scores["ndcg@10"] / peer_ndcg,
            "best epochs": selection.params.epochs,
            "epochs trained": int(table["epochs"].max()),
            "s/epoch": float(table["seconds_per_epoch"].iloc[-1]),
            "seconds": time.perf_counter() - t,
        }
        rows.append(row)
        print(
            " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
            flush=True,
        )
    print("\n| variant | ndcg@10 | recall@10 | vs user_knn | best epochs | epochs trained | s/epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['vs user_knn']:.2f}x | "
              f"{r['best epochs']} | {r['epochs trained']} | {r['s/epoch']:.2f} |")  # fmt: skip
    print(
        f"| user_knn (peer, same visitors) | {peer_ndcg:.4f} | {scores['recall']:.4f} | 1.00x | — | — | — |"
    )
    return 0
