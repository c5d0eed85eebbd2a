"""The interpreter settings the engine applies: tightened once, never loosened."""

from __future__ import annotations

import gc
import sys

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
