"""The Prometheus alert rules pass their own unit tests (``promtool test rules``).

``make test`` fetches promtool (from Debian's ``prometheus`` package, into .venv/bin) and sets
``RECALL_REQUIRE_PROMTOOL=1``, so there a missing promtool fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def _promtool() -> str:
    """The system's promtool, else the one ``make promtool-install`` put beside Python."""
    beside = Path(sys.executable).parent / "promtool"
    found = shutil.which("promtool") or (str(beside) if beside.is_file() else None)
    if found is None:
        if os.environ.get("RECALL_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing (make promtool-install: apt-get install prometheus)")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = _run("check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rule_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The same tests against a copy whose fleet-skew alert waits an hour longer fail."""
    rules = (PROMETHEUS / "alerts.yml").read_text()
    skew = rules.index("alert: RecallFleetSkew")
    waits = re.compile(r"for: (\d+)m").search(rules, skew)
    assert waits is not None
    broken = rules[: waits.start()] + f"for: {int(waits.group(1)) + 60}m" + rules[waits.end() :]
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = _run("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "RecallFleetSkew" in tested.stdout + tested.stderr
