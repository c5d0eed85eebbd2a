"""The interpreter settings the engine applies: tightened once, never loosened."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from crossdock.engine import tuning


def test_tightens_the_switch_interval_and_the_young_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_applied", False)
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    try:
        sys.setswitchinterval(0.005)
        gc.set_threshold(700, 10, 10)
        tuning.tune_interpreter()
        assert sys.getswitchinterval() == pytest.approx(tuning.SWITCH_INTERVAL)
        assert gc.get_threshold() == (tuning.GC_YOUNG_THRESHOLD, 10, 10)
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_keeps_tighter_host_settings_and_applies_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_applied", False)
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    try:
        sys.setswitchinterval(0.00001)
        gc.set_threshold(0)  # the host turned automatic collection off
        tuning.tune_interpreter()
        assert sys.getswitchinterval() == pytest.approx(0.00001)
        assert gc.get_threshold()[0] == 0
        sys.setswitchinterval(0.005)
        tuning.tune_interpreter()  # already applied in this process: nothing changes
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


def test_a_program_that_embeds_crossdock_keeps_its_interpreter(tmp_path: Path) -> None:
    """Only the commands that own their process tune it; building and running an Importer or Exporter does not."""
    (tmp_path / "in.ndjson").write_text('{"sku": "a"}\n{"sku": "b"}\n')
    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        "    outgoing: {target: {type: noop}}\n"
    )
    program = f"""
import asyncio, gc, sys
before = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count())
from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import load_project
from crossdock.store.memory import MemoryStore
project = load_project({str(tmp_path / "crossdock.yaml")!r})
store = MemoryStore()
store.ensure_routes(project.routes)
assert asyncio.run(Importer(project, store).run_route("r")).status == "ok"
assert asyncio.run(Exporter(project, store).run_route("r")).by_status == {{"finished": 2}}
after = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count())
print("same" if before == after else f"changed {{before}} -> {{after}}")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"
