"""The model artefact: a trained model with its id mappings, parameters, data window and metrics, as
pickle bytes (for a bytea column) or a `models/*.pkl` file.

Unpickling runs code from the artefact: load only bundles this pipeline wrote (the registry table or the
project's own models/ folder), never uploaded files.
"""

from __future__ import annotations

import os
import pickle
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from clickstream_dagster.ml.models import Recommender
from clickstream_dagster.ml.prep import IntArray

BUNDLE_FORMAT = 1


def _versions() -> dict[str, str]:
    import lightfm
    import pandas
    import scipy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "lightfm": getattr(lightfm, "__version__", "unknown"),
    }


@dataclass
class ModelBundle:
    """What the model registry stores. The id mappings live in the model (`user_ids`, `item_ids`)."""

    model: Recommender
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)  # start_ms, end_ms, events, ...
    # Items x items: each item's nearest items (cosine of their visitor columns), for the similar_items table
    # of a model without item embeddings or neighbours of its own; None for LightFM and item-based CF.
    item_neighbours: sp.csr_matrix | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    versions: dict[str, str] = field(default_factory=_versions)
    format_version: int = BUNDLE_FORMAT

    @property
    def user_ids(self) -> IntArray:
        return self.model.user_ids

    @property
    def item_ids(self) -> IntArray:
        return self.model.item_ids


def dumps_bundle(bundle: ModelBundle) -> bytes:
    return pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)


def loads_bundle(data: bytes) -> ModelBundle:
    bundle = pickle.loads(data)  # trusted input only: see the module docstring
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"expected a pickled ModelBundle, got {type(bundle).__name__}")
    if bundle.format_version != BUNDLE_FORMAT:
        raise ValueError(
            f"bundle format {bundle.format_version} is not {BUNDLE_FORMAT}: retrain the model with this version"
        )
    return bundle


def save_bundle(bundle: ModelBundle, path: str | Path) -> Path:
    """Write atomically (a reader never sees half a file); returns the path."""
    return write_atomic(path, dumps_bundle(bundle))


def write_atomic(path: str | Path, data: bytes) -> Path:
    """`data` into `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_bundle(path: str | Path) -> ModelBundle:
    return loads_bundle(Path(path).read_bytes())
