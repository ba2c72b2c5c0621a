""".env.example lists every environment variable the code, the scripts and the Makefile read, each one once
and with a comment, and nothing they do not read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
# String literals of these families are environment variable names wherever they appear in our code.
ENV_NAME = re.compile(r"^(CLICKSTREAM|KAFKA|DATABASE|DAGSTER|SPARK|SLACK|PROMETHEUS|BENCH)_[A-Z0-9_]+$")
SHELL_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-")  # ${NAME:-default} in the scripts
MAKE_DEFAULT = re.compile(r"^([A-Z][A-Z0-9_]*)\s*\?=", re.M)  # NAME ?= default in the Makefile


def _listed() -> dict[str, str]:
    """Name -> the comment lines just above it."""
    names: dict[str, str] = {}
    comment: list[str] = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment.append(line)
        elif "=" in line:
            name = line.split("=", 1)[0]
            assert name not in names, f"{name} listed twice"
            names[name] = "\n".join(comment)
        else:
            comment = []
    return names


def _read_by_code() -> set[str]:
    found: set[str] = set()
    for folder in ("clickstream_dagster", "dashboards", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            exported = {
                id(elt)
                for node in ast.walk(tree)
                if isinstance(node, ast.Assign)
                and any(getattr(t, "id", "") == "__all__" for t in node.targets)
                for elt in getattr(node.value, "elts", [])
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and ENV_NAME.match(node.value)
                    and id(node) not in exported  # `__all__` names Python constants, not variables
                ):
                    found.add(node.value)
    for script in (ROOT / "scripts").glob("*.sh"):
        found |= set(SHELL_DEFAULT.findall(script.read_text()))
    found |= set(MAKE_DEFAULT.findall((ROOT / "Makefile").read_text()))
    return found


def test_every_variable_read_is_listed_and_nothing_else() -> None:
    listed, read = set(_listed()), _read_by_code()
    assert read - listed == set(), f"read by the code but missing from .env.example: {sorted(read - listed)}"
    assert listed - read == set(), f"in .env.example but read nowhere: {sorted(listed - read)}"


def test_every_variable_says_what_it_does() -> None:
    for name, comment in _listed().items():
        assert comment.strip(), f"{name} has no comment above it"


def test_the_endpoints_the_readme_names_are_there() -> None:
    listed = _listed()
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SPARK_REMOTE"):
        assert "replaces the embedded" in (ROOT / ".env.example").read_text() and name in listed
