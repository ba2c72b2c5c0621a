"""No secret in the repository: every tracked file scanned by detect-secrets (its default plugins: private
keys, cloud and Slack tokens, URLs with passwords, high-entropy strings, secret-looking assignments). A
placeholder that only looks like one is marked on its line with `pragma: allowlist secret`. The stack's logs
are scanned for the secrets it was given in tests/stack/test_faults.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parents[1]


def secrets_in(files: list[str], root: Path) -> dict[str, list[str]]:
    """detect-secrets' findings per file: {file: [type, ...]}."""
    found = SecretsCollection(root=str(root))
    with default_settings():
        found.scan_files(*files)
    return {name: sorted(s["type"] for s in items) for name, items in found.json().items()}


def test_no_tracked_file_holds_a_secret() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    files = [f for f in files if f and (ROOT / f).is_file()]
    assert len(files) > 100
    assert secrets_in(files, ROOT) == {}


def test_the_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    """The control: the same scan flags each kind of secret a deployment of this project holds."""
    planted = tmp_path / "settings.env"
    token = "T0" + "4HJKL9Q/B0" + "5ZXCV1W/yq3Fp8sLk2Wm9RtVb7NcXe4D"  # pragma: allowlist secret
    planted.write_text(
        "DATABASE_URL=postgresql://clickstream:" + "hunter2-Zq81@db.internal:5432/clickstream\n"
        "SLACK_WEBHOOK_URL=https://hooks.slack" + ".com/services/" + token + "\n"
    )
    assert secrets_in(["settings.env"], tmp_path) == {
        "settings.env": ["Basic Auth Credentials", "Slack Token"]
    }
