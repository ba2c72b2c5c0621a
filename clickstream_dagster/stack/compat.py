"""The Dagster release the local stack's use of Dagster internals was written for, checked before any is used.

The forking run launcher (`run_launcher`, `run_worker`) and the pooled storage (`storage`) use modules Dagster
keeps private (`dagster._core`, `dagster._grpc`, `dagster._serdes`, `dagster._cli`, `dagster._utils`) and
dagster-postgres' storage classes. They are confined to this package; each of those modules calls
`require_dagster()` before importing them, so another Dagster release fails at start-up with this message
rather than somewhere inside a run.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SUPPORTED = {"dagster": "1.13.", "dagster-postgres": "0.29."}


class UnsupportedDagster(ImportError):
    pass


def require_dagster() -> None:
    for package, series in SUPPORTED.items():
        try:
            found = version(package)
        except PackageNotFoundError:
            found = "none"
        if not found.startswith(series):
            raise UnsupportedDagster(
                f"the local stack's run launcher and storage use internals of {package} {series}x, found "
                f"{found}: install the versions pinned in pyproject.toml (`make setup`)"
            )
