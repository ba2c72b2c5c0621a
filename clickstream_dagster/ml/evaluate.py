"""Side-by-side evaluation of every model on the time split (protocol in `split`), LightFM model
selection on validation, and `run_full_evaluation` for benches.
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.ml.config import GridConfig, LightFMParams, MLParams
from clickstream_dagster.ml.metrics import batch_auc, batch_ranking_metrics, catalogue_coverage
from clickstream_dagster.ml.models import (
    BATCH_CELLS,
    ItemKNNRecommender,
    LightFMRecommender,
    PopularityRecommender,
    Recommender,
    SessionKNNRecommender,
    UserKNNRecommender,
    batch_rows,
    top_k,
)
from clickstream_dagster.ml.nextitem import (
    EmbeddingSessionPredictor,
    ItemKNNSessionPredictor,
    MarkovPredictor,
    PopularityPredictor,
    SessionData,
    SessionPredictor,
    SKNNPredictor,
    evaluate_next_item,
    session_data,
)
from clickstream_dagster.ml.prep import IntArray, clean_events
from clickstream_dagster.ml.split import TimeSplit, time_split
from clickstream_dagster.ml.train import TrainingData, prepare_training_data

logger = logging.getLogger(__name__)

METRICS = ("precision", "recall", "f1", "ndcg", "auc", "coverage")


@dataclass
class Fold:
    """Fitting data plus who is scored against what (see `split` step 5)."""

    name: str
    data: TrainingData
    eval_users: IntArray  # row indices into data.matrix
    relevant: sp.csr_matrix  # len(eval_users) x items, 1 = relevant
    counts: dict[str, int] = field(default_factory=dict)


def make_fold(
    name: str,
    fit_events: pd.DataFrame,
    eval_events: pd.DataFrame,
    items: pd.DataFrame | None,
    params: MLParams,
) -> Fold:
    data = prepare_training_data(fit_events, items, params.cleaning, params.interactions, params.features)
    matrix = data.matrix
    users = matrix.user_index(eval_events["visitorid"].to_numpy())
    cols = matrix.item_index(eval_events["itemid"].to_numpy())
    ok = (users >= 0) & (cols >= 0)
    rel = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (users[ok], cols[ok])), shape=matrix.shape)
    rel.sum_duplicates()
    rel.data[:] = 1.0
    rel = sp.csr_matrix(rel - rel.multiply(matrix.purchased > 0))
    rel.eliminate_zeros()
    eval_users = np.flatnonzero(np.diff(rel.indptr) > 0)
    counts = {
        "eval_events": len(eval_events),
        "eval_visitors": int(eval_events["visitorid"].nunique()),
        "eval_events_warm_visitor": int((users >= 0).sum()),
        "eval_events_known_item": int((cols >= 0).sum()),
        "eval_users": len(eval_users),
        "eval_relevant_pairs": int(rel.nnz),
    }
    logger.info(
        "%s fold: fit on %d visitors x %d items; %d of %d evaluation visitors are warm with relevant items",
        name,
        matrix.shape[0],
        matrix.shape[1],
        len(eval_users),
        counts["eval_visitors"],
    )
    return Fold(name, data, eval_users, rel[eval_users], counts)


RANKING_METRICS = ("precision", "recall", "f1", "ndcg")


def evaluate_model(
    model: Recommender,
    fold: Fold,
    k: int = 10,
    max_users: int | None = None,
    seed: int = 0,
    with_auc: bool = True,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean precision/recall/F1/NDCG@k and full AUC over the fold's evaluation users, plus catalogue
    coverage of their top-k lists. `model` must have been fitted on `fold.data.matrix`."""
    return _evaluate(model, fold, k, max_users, seed, with_auc, batch_size)[0]


def evaluate_model_per_visitor(
    model: Recommender, fold: Fold, k: int, max_users: int | None, seed: int, metric: str
) -> tuple[dict[str, float], npt.NDArray[np.float64]]:
    """(mean precision/recall/F1/NDCG@k, `metric` per evaluated visitor): the gate's evidence. The visitors
    are the same, in the same order, for every model scored on `fold` with the same `max_users` and `seed`."""
    means, per_visitor = _evaluate(model, fold, k, max_users, seed, False, None)
    return {f"{m}@{k}": means[m] for m in RANKING_METRICS}, per_visitor[metric]


def evaluation_sample(fold: Fold, max_users: int | None, seed: int) -> npt.NDArray[np.intp]:
    """Positions (into `fold.eval_users`) of the visitors scored: all, or a seeded sample of `max_users`."""
    n = len(fold.eval_users)
    if max_users is None or n <= max_users:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_users, replace=False))


def _evaluate(
    model: Recommender,
    fold: Fold,
    k: int,
    max_users: int | None,
    seed: int,
    with_auc: bool,
    batch_size: int | None,
) -> tuple[dict[str, float], dict[str, npt.NDArray[np.float64]]]:
    pick = evaluation_sample(fold, max_users, seed)
    users, relevant = fold.eval_users[pick], fold.relevant[pick]
    # AUC ranks a float64 copy of each block: keep blocks at a quarter of the usual size
    batch_size = batch_size or batch_rows(len(model.item_ids), BATCH_CELLS // 4)
    parts: dict[str, list[npt.NDArray[np.float64]]] = {m: [] for m in RANKING_METRICS}
    auc_sum, auc_n = 0.0, 0
    recommended: list[IntArray] = []
    for lo in range(0, len(users), batch_size):
        batch = users[lo : lo + batch_size]
        rel = relevant[lo : lo + batch_size]
        scores = model.masked_scores(batch)
        top, top_scores = top_k(scores, k)
        top = np.where(np.isfinite(top_scores), top, -1)
        for name, values in batch_ranking_metrics(top, rel, k).items():
            parts[name].append(values)
        recommended.append(top[top >= 0])
        if with_auc:
            auc = batch_auc(scores, rel)
            auc_sum += float(np.nansum(auc))
            auc_n += int(np.isfinite(auc).sum())
    per_visitor = {name: np.concatenate(v) if v else np.zeros(0) for name, v in parts.items()}
    n = max(len(users), 1)
    out = {name: float(values.sum()) / n for name, values in per_visitor.items()}
    out["auc"] = auc_sum / auc_n if auc_n else float("nan")
    out["coverage"] = catalogue_coverage(
        np.concatenate(recommended) if recommended else np.zeros(0), len(model.item_ids)
    )
    out["users"] = float(len(users))
    return out, per_visitor


@dataclass
class LightFMSelection:
    """The grid's choice, with the evidence of its selection fit on validation (no refit needed)."""

    params: LightFMParams
    table: pd.DataFrame  # every (configuration, epochs) tried and its scores
    scores: dict[str, float]  # the chosen one's mean precision/recall/F1/NDCG@k
    per_visitor: dict[str, npt.NDArray[np.float64]]  # the chosen one's metrics per validation visitor
    fit_seconds: float  # its training time up to the chosen epochs


def select_lightfm(
    fold: Fold, grid: GridConfig, base: LightFMParams | None = None, seed: int = 0
) -> tuple[LightFMParams, pd.DataFrame]:
    """(chosen configuration, table of every one tried): `select_lightfm_with_evidence` without it."""
    selection = select_lightfm_with_evidence(fold, grid, base, seed)
    return selection.params, selection.table


def select_lightfm_with_evidence(
    fold: Fold, grid: GridConfig, base: LightFMParams | None = None, seed: int = 0
) -> LightFMSelection:
    """Grid search on the validation fold. Each (no_components, learning_rate, item_alpha) is trained once
    and scored after every epoch count in `grid.epochs` (until `grid.patience` checkpoints in a row bring no
    better score); the best `grid.metric`@`grid.k` wins.

    Bounded time: combinations run smallest `no_components` first, and one is skipped when the time spent
    plus its expected cost (seconds per component so far, times its components) would exceed
    `grid.max_seconds`. The first combination always runs."""
    base = base or LightFMParams()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    epochs = sorted(set(grid.epochs))
    combos = sorted(
        itertools.product(grid.no_components, grid.learning_rate, grid.item_alpha), key=lambda c: c[0]
    )
    seconds_per_component: list[float] = []
    evidence: list[tuple[dict[str, npt.NDArray[np.float64]], float]] = []  # per row of the table
    for i, (components, lr, alpha) in enumerate(combos):
        elapsed = time.perf_counter() - started
        expected = float(np.mean(seconds_per_component)) * components if seconds_per_component else 0.0
        if i and elapsed + expected > grid.max_seconds:
            logger.warning(
                "grid: components=%d lr=%g alpha=%g skipped: %.0f s spent + ~%.0f s expected > budget %.0f s",
                components, lr, alpha, elapsed, expected, grid.max_seconds,
            )  # fmt: skip
            continue
        combo_started = time.perf_counter()
        params = replace(base, no_components=components, learning_rate=lr, item_alpha=alpha, epochs=0)
        model = LightFMRecommender(params).fit(fold.data.matrix, fold.data.item_features)
        best_score, since_best = -np.inf, 0
        for e in epochs:
            if grid.patience is not None and since_best >= grid.patience:
                logger.info(
                    "grid: components=%d lr=%g alpha=%g stopped early at %d epochs (best %s@%d %.4f)",
                    components, lr, alpha, model.epochs_done, grid.metric, grid.k, best_score,
                )  # fmt: skip
                break
            model.train_more(e - model.epochs_done)
            metrics, per_visitor = _evaluate(model, fold, grid.k, grid.max_eval_users, seed, False, None)
            evidence.append((per_visitor, float(np.sum(model.epoch_seconds))))
            rows.append(
                {
                    "no_components": components,
                    "learning_rate": lr,
                    "item_alpha": alpha,
                    "epochs": e,
                    **{f"{m}@{grid.k}": metrics[m] for m in ("precision", "recall", "ndcg")},
                    "seconds_per_epoch": float(np.mean(model.epoch_seconds)),
                    "score": metrics[grid.metric],
                }
            )
            if metrics[grid.metric] > best_score:
                best_score, since_best = metrics[grid.metric], 0
            else:
                since_best += 1
            logger.info(
                "grid: components=%d lr=%g alpha=%g epochs=%d -> %s@%d %.4f",
                components, lr, alpha, e, grid.metric, grid.k, metrics[grid.metric],
            )  # fmt: skip
        seconds_per_component.append((time.perf_counter() - combo_started) / components)
    table = pd.DataFrame(rows)
    best_row = int(np.argmax(table["score"].to_numpy()))
    best = table.iloc[best_row]
    chosen = replace(
        base,
        no_components=int(best["no_components"]),
        learning_rate=float(best["learning_rate"]),
        item_alpha=float(best["item_alpha"]),
        epochs=int(best["epochs"]),
    )
    logger.info("grid: chose %s in %.1f s", chosen, time.perf_counter() - started)
    per_visitor, fit_seconds = evidence[best_row]
    scores = {
        f"{m}@{grid.k}": float(per_visitor[m].mean()) if len(per_visitor[m]) else 0.0 for m in RANKING_METRICS
    }
    return LightFMSelection(chosen, table, scores, per_visitor, fit_seconds)


class PeakRSS:
    """Peak resident memory of this process while the block runs, in MB (`peak_mb`).

    A daemon thread samples /proc/self/statm every `interval` seconds (cheap, and unlike tracemalloc it
    does not slow pandas down); without /proc the process high-water mark (ru_maxrss) is used."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rss_mb() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while True:
            rss = self._rss_mb()
            if rss is not None:
                self.peak_mb = max(self.peak_mb, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRSS:
        if self._rss_mb() is not None:
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class EvaluationReport:
    table: pd.DataFrame  # one row per model: ranking metrics on test, next-item metrics, fit time
    timings: dict[str, float]
    peak_memory_mb: float
    cleaning: dict[str, int]
    split: TimeSplit
    validation: Fold
    test: Fold | None  # None: not evaluated on test (then no models, sessions or next-item rows either)
    lightfm_params: LightFMParams
    selection: LightFMSelection | None  # the grid's choice and its validation evidence (None without a grid)
    grid: pd.DataFrame
    models: dict[str, Recommender]
    sessions: SessionData | None
    next_item: pd.DataFrame


def full_evaluation(
    events: pd.DataFrame, items: pd.DataFrame | None, params: MLParams | None = None
) -> EvaluationReport:
    """Clean, split, select LightFM on validation, refit every model on train + validation, score on test,
    and run the next-item evaluation."""
    params = params or MLParams()
    t = time.perf_counter()
    cleaned, cleaning = clean_events(events, params.cleaning)
    split = time_split(cleaned, params.split)
    return evaluate_split(cleaned, split, cleaning, items, params, time.perf_counter() - t)


def evaluate_split(
    cleaned: pd.DataFrame,
    split: TimeSplit,
    cleaning: dict[str, int],
    items: pd.DataFrame | None,
    params: MLParams,
    cleaning_seconds: float = 0.0,
    on_test: bool = True,
) -> EvaluationReport:
    """`full_evaluation` from cleaned events and their split on: validation fold, LightFM selection, and with
    `on_test` every model refitted on train + validation and scored on test, and the next-item evaluation."""
    timings: dict[str, float] = {}
    t_all = time.perf_counter() - cleaning_seconds
    with PeakRSS() as memory:
        t = time.perf_counter() - cleaning_seconds
        validation = make_fold("validation", split.train, split.validation, items, params)
        test = make_fold("test", split.train_and_validation, split.test, items, params) if on_test else None
        timings["data_prep"] = time.perf_counter() - t

        t = time.perf_counter()
        selection: LightFMSelection | None = None
        if params.grid is not None:
            selection = select_lightfm_with_evidence(validation, params.grid, params.lightfm, params.seed)
            lightfm_params, grid = selection.params, selection.table
        else:
            lightfm_params, grid = params.lightfm, pd.DataFrame()
        timings["grid_search"] = time.perf_counter() - t
        if test is not None:
            table, models, sessions, next_item = _on_test(
                cleaned, split, test, lightfm_params, params, timings
            )
        else:
            table, models, sessions, next_item = pd.DataFrame(columns=["model"]), {}, None, pd.DataFrame()
        timings["total"] = time.perf_counter() - t_all

    logger.info("evaluation done in %.1f s, peak RSS %.0f MB", timings["total"], memory.peak_mb)
    return EvaluationReport(
        table=table,
        timings=timings,
        peak_memory_mb=memory.peak_mb,
        cleaning=cleaning,
        split=split,
        validation=validation,
        test=test,
        lightfm_params=lightfm_params,
        selection=selection,
        grid=grid,
        models=models,
        sessions=sessions,
        next_item=next_item,
    )


def _on_test(
    cleaned: pd.DataFrame,
    split: TimeSplit,
    test: Fold,
    lightfm_params: LightFMParams,
    params: MLParams,
    timings: dict[str, float],
) -> tuple[pd.DataFrame, dict[str, Recommender], SessionData, pd.DataFrame]:
    """Every model refitted on train + validation and scored on `test`, and the next-item evaluation:
    (side-by-side table, the models, the sessions, the next-item rows); `timings` gets each step's."""
    models: dict[str, Recommender] = {
        "popularity": PopularityRecommender(),
        "item_knn": ItemKNNRecommender(params.knn),
        "user_knn": UserKNNRecommender(params.knn),
        "session_knn": SessionKNNRecommender(params.session),
        "lightfm": LightFMRecommender(lightfm_params),
    }
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        model.fit(test.data.matrix, test.data.item_features, test.data.events)
        timings[f"fit_{name}"] = model.fit_seconds
        t = time.perf_counter()
        metrics = evaluate_model(model, test, params.k, params.max_eval_users, params.seed)
        timings[f"eval_{name}"] = time.perf_counter() - t
        rows.append({"model": name, **{f"{m}@{params.k}" if m != "auc" else m: metrics[m] for m in METRICS},
                     "users": int(metrics["users"]), "fit_seconds": model.fit_seconds})  # fmt: skip
        logger.info("test: %s %s", name, {m: round(metrics[m], 4) for m in METRICS})
    lightfm = models["lightfm"]
    assert isinstance(lightfm, LightFMRecommender)
    timings["lightfm_seconds_per_epoch"] = (
        float(np.mean(lightfm.epoch_seconds)) if lightfm.epoch_seconds else 0.0
    )

    t = time.perf_counter()
    sessions = session_data(cleaned, split.test_start_ms, params.session)
    knn = models["item_knn"]
    assert isinstance(knn, ItemKNNRecommender)
    predictors: list[SessionPredictor] = [
        PopularityPredictor(),
        MarkovPredictor(),
        SKNNPredictor(params.session.sknn_neighbours),
        ItemKNNSessionPredictor(knn),
        EmbeddingSessionPredictor(lightfm),
    ]
    next_item = evaluate_next_item(predictors, sessions, params.session, params.seed)
    timings["next_item"] = time.perf_counter() - t
    return _side_by_side(pd.DataFrame(rows), next_item, params.session.cutoff), models, sessions, next_item


# next-item predictor -> the ranking model it comes from (sknn and markov are session-only)
_NEXT_ITEM_MODEL = {"pop": "popularity", "item_knn": "item_knn", "lightfm_emb": "lightfm"}


def _side_by_side(ranking: pd.DataFrame, next_item: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    cols = ["model", f"hr@{cutoff}", f"mrr@{cutoff}"]
    nxt = next_item[cols].copy()
    nxt["model"] = nxt["model"].map(lambda m: _NEXT_ITEM_MODEL.get(m, m))
    return (
        ranking.merge(nxt, on="model", how="outer")
        .set_index("model")
        .reindex([*ranking["model"], *[m for m in nxt["model"] if m not in set(ranking["model"])]])
        .reset_index()
    )


def run_full_evaluation(
    events_df: pd.DataFrame, items_df: pd.DataFrame | None, params: MLParams | dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, float], float]:
    """For benches: (all models' metrics side by side, timings in seconds, peak memory in MB).

    Peak memory is the process's peak resident set size during the call (see `PeakRSS`), so it includes
    the interpreter, the loaded libraries and the input frames."""
    p = params if isinstance(params, MLParams) else MLParams.from_dict(params)
    report = full_evaluation(events_df, items_df, p)
    return report.table, dict(report.timings), report.peak_memory_mb
