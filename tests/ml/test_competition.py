"""Every candidate type competes on the same validation visitors: session kNN against a brute-force V-SKNN,
and the competition's reproducibility (the same data and settings give the same evidence)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.ml.competition import CANDIDATE_TYPES, compete
from clickstream_dagster.ml.config import MLParams, SessionConfig
from clickstream_dagster.ml.dataset import build_dataset
from clickstream_dagster.ml.evaluate import make_fold, select_lightfm_with_evidence
from clickstream_dagster.ml.gate import GateSettings
from clickstream_dagster.ml.models import SessionKNNRecommender
from clickstream_dagster.ml.prep import InteractionMatrix, build_interactions

MIN = 60_000


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["visitorid", "itemid", "timestamp"])
    return frame.assign(
        event=pd.Categorical(["view"] * len(frame), categories=["view", "addtocart", "transaction"])
    )


def _brute_force(
    events: pd.DataFrame, visitor: int, items: list[int], gap_ms: int, k: int
) -> dict[int, float]:
    """V-SKNN by the book: sessions by a gap, the visitor's last one weighted p/L, cosine neighbours (the
    query session left out), items scored by their neighbours' summed similarity."""
    sessions: list[tuple[int, list[int]]] = []
    for v, group in events.sort_values(["visitorid", "timestamp"]).groupby("visitorid", sort=True):
        assert isinstance(v, int | np.integer)
        last_ts = None
        for item, ts in zip(group["itemid"], group["timestamp"], strict=True):
            if last_ts is None or ts - last_ts > gap_ms:
                sessions.append((int(v), []))
            sessions[-1][1].append(int(item))
            last_ts = ts
    mine = [i for i, (v, _) in enumerate(sessions) if v == visitor]
    query_index = mine[-1]
    query_items = sessions[query_index][1]
    weight: dict[int, float] = {}
    for pos, item in enumerate(query_items, start=1):
        weight[item] = max(weight.get(item, 0.0), pos / len(query_items))
    q_norm = math.sqrt(sum(w * w for w in weight.values()))
    sims = []
    for index, (_, its) in enumerate(sessions):
        if index == query_index:
            continue
        unique = set(its)
        dot = sum(weight.get(i, 0.0) for i in unique)
        if dot > 0:
            sims.append((dot / (q_norm * math.sqrt(len(unique))), index))
    sims.sort(key=lambda t: -t[0])
    scores = dict.fromkeys(items, 0.0)
    for sim, index in sims[:k]:
        for i in set(sessions[index][1]):
            scores[i] += sim
    return scores


def test_session_knn_matches_a_brute_force_v_sknn() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for visitor in range(40):
        t = int(rng.integers(0, 10**6)) * 1000
        for _ in range(int(rng.integers(2, 9))):
            rows.append((visitor, int(rng.integers(0, 25)), t))
            t += int(rng.choice([MIN, 5 * MIN, 45 * MIN]))  # some gaps start new sessions
    rows += [(40, 3, 0), (40, 4, MIN), (40, 3, 2 * MIN), (40, 5, 3 * MIN)]  # a repeat in the query session
    events = _events(rows)
    matrix = InteractionMatrix.from_interactions(build_interactions(events))
    model = SessionKNNRecommender(SessionConfig(gap_minutes=30, sknn_neighbours=5)).fit(matrix, None, events)
    items = matrix.item_ids.tolist()
    for visitor in (0, 7, 23, 39, 40):
        expected = _brute_force(events, visitor, items, 30 * MIN, 5)
        got = model.score([visitor])[0]
        tie_break = model.popularity / model.popularity.max() * 1e-6
        assert got - tie_break == pytest.approx(np.array([expected[i] for i in items]), abs=1e-5)


def test_session_knn_needs_the_events() -> None:
    events = _events([(1, 1, 0), (1, 2, MIN), (2, 1, 0), (2, 3, MIN)])
    matrix = InteractionMatrix.from_interactions(build_interactions(events))
    with pytest.raises(ValueError, match="needs the training events"):
        SessionKNNRecommender().fit(matrix)


@pytest.fixture(scope="module")
def fold_and_params(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, MLParams]:
    from clickstream_dagster.data.generator import generate

    raw = tmp_path_factory.mktemp("raw")
    generate(raw, 40_000, seed=11)
    params = MLParams.from_dict({"grid": {"no_components": [16], "item_alpha": [0.0], "epochs": [5, 10]}})
    dataset = build_dataset(pd.read_csv(raw / "events.csv"), None, params)
    return make_fold("validation", dataset.split.train, dataset.split.validation, None, params), params


def test_every_type_competes_on_the_same_visitors_and_reruns_agree(
    fold_and_params: tuple[object, MLParams],
) -> None:
    fold, params = fold_and_params
    gate = GateSettings(resamples=500)

    def run() -> dict[str, object]:
        assert params.grid is not None
        selection = select_lightfm_with_evidence(fold, params.grid, params.lightfm, params.seed)  # type: ignore[arg-type]
        return {c.model_type: c for c in compete(fold, params, gate, selection)}  # type: ignore[arg-type]

    first, second = run(), run()
    assert set(first) == set(CANDIDATE_TYPES)
    sizes = {c.estimate.visitors for c in first.values()}  # type: ignore[attr-defined]
    assert len(sizes) == 1 and sizes.pop() > 0
    for model_type in ("popularity", "item_knn", "user_knn", "session_knn"):  # deterministic
        assert first[model_type].estimate == second[model_type].estimate  # type: ignore[attr-defined]
        assert np.array_equal(first[model_type].per_visitor, second[model_type].per_visitor)  # type: ignore[attr-defined]
    # LightFM trains with Hogwild threads: a re-run may differ, but by less than its own interval.
    a, b = first["lightfm"].estimate, second["lightfm"].estimate  # type: ignore[attr-defined]
    assert abs(a.mean - b.mean) < (a.high - a.low) / 2
