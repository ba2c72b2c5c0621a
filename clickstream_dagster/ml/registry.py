"""The model registry (table model_registry): register a run's model with its artefact, record the promotion
gate's decision, promote a model (retiring the one served before), and load the promoted model to serve.

A model moves candidate -> promoted -> retired, or candidate -> rejected; at most one row is promoted (a
unique partial index). Each artefact is stored in the row with its sha256 and exported to the models folder
(`lightfm-vNNNN.pkl`, and `promoted.pkl` for the served one). Rows are read as the frozen dataclasses below
(psycopg's `class_row`); the queries are in `clickstream_dagster.sql.ml`. Every function runs in the
caller's transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from clickstream_dagster.ml.bundle import ModelBundle, loads_bundle, write_atomic
from clickstream_dagster.ml.config import LightFMParams
from clickstream_dagster.ml.gate import Champion, gate_decision
from clickstream_dagster.sql import ml as q

PROMOTABLE = ("candidate", "promoted")
PROMOTED_FILE = "promoted.pkl"


class RegistryError(RuntimeError):
    """The registry holds no model for what was asked (or a damaged one); the message says what to run."""


@dataclass(frozen=True)
class PromotedModel:
    """The served model's row (`PROMOTED_MODEL`)."""

    version: int
    params: dict[str, Any]  # every ML setting, with the chosen LightFM configuration under "lightfm"
    metrics: dict[str, Any]
    artefact: bytes  # the pickled ModelBundle
    artefact_sha256: str

    def champion(self) -> Champion:
        return Champion(self.version, LightFMParams(**self.params["lightfm"]))


@dataclass(frozen=True)
class RunCandidate:
    """The newest model a run registered (`CANDIDATE_OF_RUN`)."""

    version: int
    metrics: dict[str, Any]
    status: str  # candidate, promoted, rejected or retired


@dataclass(frozen=True)
class RegisteredModel:
    version: int
    path: Path  # its models/lightfm-vNNNN.pkl export
    artefact_bytes: int
    artefact_sha256: str


@dataclass(frozen=True)
class GateVerdict:
    version: int
    status_before: str
    passed: bool
    reason: str
    metrics: dict[str, Any]  # as registered: the evidence the decision was taken on


def promoted_model(conn: psycopg.Connection) -> PromotedModel | None:
    with conn.cursor(row_factory=class_row(PromotedModel)) as cur:
        return cur.execute(q.PROMOTED_MODEL).fetchone()


def run_candidate(conn: psycopg.Connection, run_id: str) -> RunCandidate | None:
    with conn.cursor(row_factory=class_row(RunCandidate)) as cur:
        return cur.execute(q.CANDIDATE_OF_RUN, (run_id,)).fetchone()


def register_model(
    conn: psycopg.Connection,
    bundle: ModelBundle,
    artefact: bytes,
    metrics: dict[str, Any],
    cleaning: dict[str, int],
    run_id: str | None,
    models_dir: Path,
    model_type: str = "lightfm",
) -> RegisteredModel:
    """A new `candidate` row with `artefact` (the pickled `bundle`) and its sha256, exported to
    `models_dir`/lightfm-vNNNN.pkl. `metrics` must be JSON-safe (no NaN)."""
    sha = hashlib.sha256(artefact).hexdigest()
    with conn.cursor(row_factory=scalar_row) as cur:
        version = cur.execute(
            q.INSERT_MODEL,
            {
                "model_type": model_type,
                "params": Jsonb(bundle.params),
                "data_window": Jsonb(bundle.data_window),
                "cleaning": Jsonb(cleaning),
                "metrics": Jsonb(metrics),
                "library_versions": Jsonb(bundle.versions),
                "artefact": artefact,
                "artefact_sha256": sha,
                "dagster_run_id": run_id,
            },
        ).fetchone()
    assert version is not None
    path = write_atomic(models_dir / f"{model_type}-v{int(version):04d}.pkl", artefact)
    conn.execute(q.SET_ARTEFACT_PATH, (str(path), version))
    return RegisteredModel(int(version), path, len(artefact), sha)


def judge_run_candidate(conn: psycopg.Connection, run_id: str) -> GateVerdict | None:
    """Apply the gate (`ml.gate.gate_decision`) to the model `run_id` registered: the reason is recorded
    either way, and a rejected model's status becomes `rejected`. None if the run registered no model."""
    row = run_candidate(conn, run_id)
    if row is None:
        return None
    passed, reason = gate_decision(row.metrics)
    conn.execute(q.PASS_GATE if passed else q.REJECT_MODEL, (reason, row.version))
    return GateVerdict(row.version, row.status, passed, reason, row.metrics)


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


def load_promoted(conn: psycopg.Connection) -> tuple[int, ModelBundle]:
    """(version, bundle) of the served model, its artefact checked against its sha256."""
    row = promoted_model(conn)
    if row is None:
        raise RegistryError("no promoted model: materialize lightfm_model and promoted_model first")
    artefact = bytes(row.artefact)
    if hashlib.sha256(artefact).hexdigest() != row.artefact_sha256:
        raise RegistryError(f"model v{row.version}: artefact does not match its sha256; retrain the model")
    return row.version, loads_bundle(artefact)
