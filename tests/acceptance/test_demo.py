"""``crossdock demo --once`` as a new user runs it: a fresh database each time (``--keep`` continues), retries
settled before the summary, and hints that work when typed as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(tmp_path: Path, *flags: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "demo", "--once", "--products", "60", "--dir", "demo", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def summary(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if re.match(r"\s+erp-to-(shop|pim): \D", line)]


def test_each_demo_starts_afresh_settles_its_retries_and_prints_working_hints(tmp_path: Path) -> None:
    first = demo(tmp_path)
    assert "retry" not in " ".join(summary(first)[2:]), first  # the final counts: nothing left in retry
    second = demo(tmp_path)
    assert "starting with a fresh database" in second
    assert summary(second)[2:] == summary(first)[2:], (first, second)  # the same counts, not two runs mixed
    kept = demo(tmp_path, "--keep")
    assert "continuing with the database of the last demo" in kept
    # the same catalogue again: nothing new, every accepted product unchanged
    assert re.search(r"erp-to-shop: new 0, filtered \d+, rejected \d+, unchanged [1-9]\d*", kept), kept

    hint = next(line.strip() for line in second.splitlines() if line.strip().endswith("tasks list --status failed"))
    typed = subprocess.run(hint, shell=True, cwd=tmp_path / "demo", capture_output=True, text=True, timeout=60)
    assert typed.returncode == 0, (hint, typed.stdout, typed.stderr)
    assert "SKU-" in typed.stdout
