"""Fetching jars from Maven Central with Maven (`mvn dependency:copy-dependencies` on a small pom)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from clickstream_dagster.stack.process import StackError


def require_java(what: str) -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(f"Java not found: {what} needs Java 17+ (e.g. `apt-get install openjdk-17-jdk`)")
    return java


def copy_dependencies(
    pom: Path, out_dir: Path, properties: dict[str, str], what: str, quiet: bool = True
) -> Path:
    """Copy the runtime dependencies of `pom` into `out_dir` once (a marker file records completion)."""
    marker = out_dir / ".complete"
    if marker.is_file():
        return out_dir
    require_java(what)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"Maven not found: it fetches {what} (e.g. `apt-get install maven`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(pom),
        *(f"-D{k}={v}" for k, v in properties.items()),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StackError(f"Maven could not fetch {what}:\n{tail}")
    marker.write_text(" ".join(properties.values()) + "\n")
    return out_dir
