"""The "Models" and "Recommendation explorer" pages' loaders: the registry with every version's metrics and
the gate's evidence, and what the API serves a visitor beside their history."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from clickstream_dagster.dashboard.sources import Database, category_text, int_or_none
from clickstream_dagster.sql import dashboard as sql

POPULAR_LIST = "popular"


def _numeric_leaves(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], float]]:
    out: list[tuple[tuple[str, ...], float]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            out.extend(_numeric_leaves(value, path))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append((path, float(value)))
    return out


def metrics_long(
    version: int, status: str, model_type: str, metrics: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """A registry row's metrics as rows (version, status, split, model, metric, value).

    `validation` and `test` may hold metrics directly (then they are the registry's model type's) or one
    mapping per model; other sections (such as `gate`) are not metrics of a model and are left out.
    """
    rows: list[dict[str, Any]] = []
    for split in ("validation", "test"):
        section = (metrics or {}).get(split)
        if not isinstance(section, Mapping):
            continue
        for path, value in _numeric_leaves(section):
            model, metric = (model_type, path[0]) if len(path) == 1 else (path[0], "/".join(path[1:]))
            # The gate's validation section names the candidate (this row's own model) and the
            # configuration of the model that was promoted when it was trained.
            model = {"candidate": model_type, "champion": "promoted model"}.get(model, model)
            rows.append(
                {
                    "version": version,
                    "status": status,
                    "split": split,
                    "model": model,
                    "metric": metric,
                    "value": value,
                }
            )
    return rows


@dataclass(frozen=True)
class Registry:
    models: pd.DataFrame  # one row per version: version, model_type, status, reason, trained_at, decided_at
    metrics: pd.DataFrame  # long: version, status, split, model, metric, value


EVIDENCE_COLUMNS = ("gate metric", "validation estimate", "interval low", "interval high", "visitors")


def gate_evidence(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The gate's evidence a registry row stores: its metric, the validation estimate with its bootstrap
    interval and the number of validation visitors (empty for rows registered before the gate had one)."""
    evidence = (metrics or {}).get("evidence")
    estimate = evidence.get("candidate", {}).get("estimate") if isinstance(evidence, Mapping) else None
    if not isinstance(estimate, Mapping):
        return dict.fromkeys(EVIDENCE_COLUMNS)
    return dict(
        zip(
            EVIDENCE_COLUMNS,
            (
                (metrics or {}).get("metric"),
                estimate.get("mean"),
                estimate.get("low"),
                estimate.get("high"),
                int_or_none(estimate.get("visitors")),
            ),
            strict=True,
        )
    )


def model_registry(db: Database) -> Registry:
    df = db.frame(sql.MODEL_REGISTRY)
    rows: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    for version, model_type, status, _, metrics, *_ in df.itertuples(index=False, name=None):
        rows.extend(metrics_long(int(version), status, model_type, metrics))
        evidence.append(gate_evidence(metrics))
    long = pd.DataFrame(rows, columns=["version", "status", "split", "model", "metric", "value"])
    models = df.drop(columns=["metrics"])
    models = pd.concat(
        [models, pd.DataFrame(evidence, columns=list(EVIDENCE_COLUMNS), index=models.index)], axis=1
    )
    return Registry(models=models, metrics=long)


def registry_table(registry: Registry) -> pd.DataFrame:
    """One row per version with the test metrics of its own model type beside status and reason."""
    models = registry.models.copy()
    if models.empty:
        return models
    own = registry.metrics.merge(models[["version", "model_type"]], on="version")
    own = own[(own["split"] == "test") & (own["model"] == own["model_type"])]
    if not own.empty:
        wide = own.pivot_table(index="version", columns="metric", values="value", aggfunc="first")
        wide.columns = [f"test {c}" for c in wide.columns]
        models = models.merge(wide, left_on="version", right_index=True, how="left")
    return models


def recommended_visitors(db: Database, limit: int = 500) -> pd.DataFrame:
    return db.frame(sql.RECOMMENDED_VISITORS, {"limit": limit})


def recommendation_coverage(db: Database) -> tuple[int, int | None]:
    _, rows = db.fetch(sql.RECOMMENDATION_COVERAGE)
    visitors, version = rows[0]
    return int(visitors), int_or_none(version)


@dataclass(frozen=True)
class VisitorHistory:
    events: int  # all of the visitor's events
    recent: pd.DataFrame  # the newest ones


def visitor_history(db: Database, visitorid: int, limit: int = 25) -> VisitorHistory:
    _, rows = db.fetch(sql.VISITOR_EVENT_COUNT, {"visitorid": visitorid})
    return VisitorHistory(
        events=int(rows[0][0]), recent=db.frame(sql.VISITOR_HISTORY, {"visitorid": visitorid, "limit": limit})
    )


def visitor_recommendations(db: Database, visitorid: int) -> pd.DataFrame:
    df = db.frame(sql.VISITOR_RECOMMENDATIONS, {"visitorid": visitorid})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])


def popular_items(db: Database, limit: int = 10, list_name: str = POPULAR_LIST) -> pd.DataFrame:
    df = db.frame(sql.POPULAR_ITEMS, {"list": list_name, "limit": limit})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])
