"""The model registry (table model_registry): register a run's model with its artefact, record the promotion
gate's decision, promote a model (retiring the one served before), and load the promoted model to serve.

A run registers every candidate: the one it selected moves candidate -> promoted -> retired, or candidate ->
rejected; the others are rejected (outranked) at once, without an artefact. At most one row is promoted (a
unique partial index). Each artefact is stored in the row with its sha256 and exported to the models folder
(`<type>-vNNNN.pkl`, and `promoted.pkl` for the served one). Rows are read as the frozen dataclasses below
(psycopg's `class_row`); the queries are in `clickstream_dagster.sql.ml`. Every function runs in the
caller's transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from clickstream_dagster.ml.bundle import ModelBundle, loads_bundle, write_atomic
from clickstream_dagster.ml.gate import Decision, gate_decision
from clickstream_dagster.sql import ml as q
from clickstream_dagster.sql.api import POPULARITY_VERSION

PROMOTABLE = ("candidate", "promoted")
PROMOTED_FILE = "promoted.pkl"


class RegistryError(RuntimeError):
    """The registry holds no model for what was asked (or a damaged one); the message says what to run."""


@dataclass(frozen=True)
class PromotedModel:
    """The served model's row (`PROMOTED_MODEL`)."""

    version: int
    model_type: str
    params: dict[str, Any]  # every ML setting, and the model's type and configuration under "model"
    metrics: dict[str, Any]
    artefact: bytes  # the pickled ModelBundle
    artefact_sha256: str

    def served(self) -> tuple[str, dict[str, Any]]:
        """(model type, configuration) of the served model; a model registered before every candidate
        competed (#18) is a LightFM model with its configuration under "lightfm"."""
        model = self.params.get("model")
        if isinstance(model, dict) and "model_type" in model:
            return str(model["model_type"]), dict(model.get("config") or {})
        return self.model_type, dict(self.params.get("lightfm") or {})


@dataclass(frozen=True)
class RunCandidate:
    """The candidate a run selected (`CANDIDATE_OF_RUN`)."""

    version: int
    model_type: str
    metrics: dict[str, Any]
    status: str  # candidate, promoted, rejected or retired


@dataclass(frozen=True)
class RegisteredModel:
    version: int
    path: Path | None  # its models/<type>-vNNNN.pkl export (None without an artefact)
    artefact_bytes: int
    artefact_sha256: str | None


def promoted_model(conn: psycopg.Connection) -> PromotedModel | None:
    with conn.cursor(row_factory=class_row(PromotedModel)) as cur:
        return cur.execute(q.PROMOTED_MODEL).fetchone()


def run_candidate(conn: psycopg.Connection, run_id: str) -> RunCandidate | None:
    with conn.cursor(row_factory=class_row(RunCandidate)) as cur:
        return cur.execute(q.CANDIDATE_OF_RUN, (run_id,)).fetchone()


def register_model(
    conn: psycopg.Connection,
    bundle: ModelBundle | None,
    artefact: bytes | None,
    metrics: dict[str, Any],
    cleaning: dict[str, int],
    run_id: str | None,
    models_dir: Path,
    model_type: str = "lightfm",
    *,
    params: dict[str, Any] | None = None,
    data_window: dict[str, Any] | None = None,
    selected: bool = True,
    reason: str | None = None,
) -> RegisteredModel:
    """A new registry row. The selected candidate of a run comes with `bundle` and `artefact` (the pickled
    bundle, stored with its sha256 and exported to `models_dir`/<type>-vNNNN.pkl) and starts as `candidate`;
    a candidate that was not selected has neither and is `rejected` at once with `reason`. `metrics` must be
    JSON-safe (no NaN)."""
    if selected and (bundle is None or artefact is None):
        raise ValueError("the selected candidate needs its bundle and artefact")
    sha = hashlib.sha256(artefact).hexdigest() if artefact is not None else None
    with conn.cursor(row_factory=scalar_row) as cur:
        version = cur.execute(
            q.INSERT_MODEL,
            {
                "model_type": model_type,
                "params": Jsonb(bundle.params if bundle is not None else params or {}),
                "data_window": Jsonb(bundle.data_window if bundle is not None else data_window or {}),
                "cleaning": Jsonb(cleaning),
                "metrics": Jsonb(metrics),
                "library_versions": Jsonb(bundle.versions if bundle is not None else {}),
                "artefact": artefact,
                "artefact_sha256": sha,
                "dagster_run_id": run_id,
                "selected": selected,
                "reason": reason,
            },
        ).fetchone()
    assert version is not None
    if artefact is None:
        return RegisteredModel(int(version), None, 0, None)
    path = write_atomic(models_dir / f"{model_type}-v{int(version):04d}.pkl", artefact)
    conn.execute(q.SET_ARTEFACT_PATH, (str(path), version))
    return RegisteredModel(int(version), path, len(artefact), sha)


Outcome = Literal["promoted", "kept", "popularity"]


@dataclass(frozen=True)
class ServingDecision:
    """What a training run decided to serve. Every outcome is a success of the run:

    - `promoted`: this run's candidate passed the gate and is now served (`promoted` is its row);
    - `kept`: it did not pass, and the promoted model `served_version` stays; nothing is rewritten;
    - `popularity`: it did not pass and no model was ever promoted, so the popular and trending lists are
      served (version 0 of the serving tables: no model's lists), rebuilt from this run's data.
    """

    outcome: Outcome
    candidate_version: int
    reason: str
    served_version: int  # POPULARITY_VERSION (0): the popular lists, no model
    promoted: PromotedModel | None = None


def run_decision(conn: psycopg.Connection, run_id: str) -> tuple[RunCandidate, Decision]:
    """The model `run_id` registered and the gate's decision on it, read only; RegistryError when the run
    registered none."""
    row = run_candidate(conn, run_id)
    if row is None:
        raise RegistryError("this run registered no model: materialize candidate_model first")
    return row, gate_decision(row.metrics)


def decide_and_promote(conn: psycopg.Connection, run_id: str) -> ServingDecision:
    """Apply the gate to the model `run_id` registered and act on it (one transaction: the caller's): promote
    it, or keep the incumbent, or (nothing ever promoted) serve popularity. Idempotent for a retried step."""
    row, decision = run_decision(conn, run_id)
    # The reason is recorded either way; a rejected model's status becomes `rejected`.
    conn.execute(q.PASS_GATE if decision.promote else q.REJECT_MODEL, (decision.reason, row.version))
    if decision.promote:
        promoted = promote_run_candidate(conn, run_id)
        return ServingDecision("promoted", row.version, decision.reason, promoted.version, promoted)
    served = served_version(conn)  # the version alone: the incumbent's artefact is not read
    if served != POPULARITY_VERSION:
        return ServingDecision("kept", row.version, decision.reason, served)
    return ServingDecision("popularity", row.version, decision.reason, POPULARITY_VERSION)


def promote_run_candidate(conn: psycopg.Connection, run_id: str) -> PromotedModel:
    """Promote the model `run_id` registered and retire the one served before (one transaction: the
    caller's); the promoted row."""
    row = run_candidate(conn, run_id)
    if row is None or row.status not in PROMOTABLE:
        found = "it registered none" if row is None else f"its model v{row.version} is {row.status}"
        raise RegistryError(f"no model of this run can be promoted: {found}")
    conn.execute(q.RETIRE_PROMOTED, (row.version,))
    if conn.execute(q.PROMOTE_MODEL, (row.version,)).fetchone() is None:
        raise RegistryError(f"model v{row.version} could not be promoted")
    promoted = promoted_model(conn)
    assert promoted is not None
    return promoted


def export_promoted(model: PromotedModel, models_dir: Path) -> Path:
    """The served model's artefact as `models_dir`/promoted.pkl (written atomically)."""
    return write_atomic(models_dir / PROMOTED_FILE, bytes(model.artefact))


def served_version(conn: psycopg.Connection) -> int:
    """The promoted model's version, or POPULARITY_VERSION when none was ever promoted."""
    with conn.cursor(row_factory=scalar_row) as cur:
        version = cur.execute(q.PROMOTED_VERSION).fetchone()
    return int(version) if version is not None else POPULARITY_VERSION


def load_served(conn: psycopg.Connection) -> tuple[int, ModelBundle | None]:
    """(version, bundle) of the promoted model, or (POPULARITY_VERSION, None) when none was ever promoted
    and the popular lists are served; its artefact checked against its sha256."""
    row = promoted_model(conn)
    if row is None:
        return POPULARITY_VERSION, None
    artefact = bytes(row.artefact)
    if hashlib.sha256(artefact).hexdigest() != row.artefact_sha256:
        raise RegistryError(f"model v{row.version}: artefact does not match its sha256; retrain the model")
    return row.version, loads_bundle(artefact)
