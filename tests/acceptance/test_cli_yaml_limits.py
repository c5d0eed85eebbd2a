"""`crossdock check` on hostile YAML: an alias bomb and an alias loop exit 2 at once, with FILE:LINE, no traceback."""

from __future__ import annotations

import itertools
import time
from typing import Any


def _bomb() -> str:
    """The classic billion laughs: 9 levels of 10 aliases of the level before, 10**10 strings from 500 bytes."""
    levels = "abcdefghij"
    text = "a: &a [" + ", ".join(['"lol"'] * 10) + "]\n"
    for prev, name in itertools.pairwise(levels):
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    return text


BOMB = _bomb()


def test_check_refuses_a_billion_laughs_bomb_quickly(project: Any) -> None:
    project.write_config(BOMB)
    started = time.monotonic()
    # a short timeout: before the fix this ran past 60 s at 4.8 GB
    result = project.cli("check", expect=2, timeout=20)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"check took {elapsed:.1f} s"
    assert "Traceback" not in result.stderr
    assert "crossdock.yaml:" in result.stderr
    assert "YAML aliases expand to more than" in result.stderr


def test_check_refuses_a_recursive_alias_without_a_traceback(project: Any) -> None:
    project.write_config("routes:\n  r: &r\n    again: *r\n")
    result = project.cli("check", expect=2, timeout=20)
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert "crossdock.yaml:3: " in result.stderr
    assert "alias *r is used inside the value it names" in result.stderr
