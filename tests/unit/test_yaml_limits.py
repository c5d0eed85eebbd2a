"""YAML hardening: alias bombs and alias loops are refused fast, with FILE:LINE; anchors and merge keys still work."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from crossdock.config import load_config
from crossdock.config.yamlsource import MAX_ALIAS_NODES, MAX_YAML_DEPTH, load_yaml
from crossdock.errors import ConfigError, ConfigErrors

ROUTE = """\
routes:
  r:
    incoming:
      source: {type: file, path: data/in.ndjson}
    identifier: sku
    outgoing:
      target: {type: noop}
"""


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """The classic bomb: each level is ``width`` aliases of the one before, so ``width**levels`` strings in all."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * width) + "]")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "crossdock.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[ConfigError]:
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        load_config(path, {})
    exc = info.value
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def test_billion_laughs_is_refused_fast_and_small_naming_file_and_line(tmp_path: Path) -> None:
    bomb = billion_laughs()
    assert len(bomb.encode()) < 600
    path = write(tmp_path, bomb)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        [error] = errors_of(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    assert error.file is not None and error.file.endswith("crossdock.yaml")
    # the line of an alias use, not the top of the file
    assert error.line is not None and 2 <= error.line <= 10
    assert f"crossdock.yaml:{error.line}: " in error.message
    assert f"more than {MAX_ALIAS_NODES} nodes" in error.message
    assert "fewer anchors" in error.message


def test_a_bomb_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, billion_laughs(), "more.yaml")
    errors = errors_of(write(tmp_path, "include: [more.yaml]\n" + ROUTE))
    assert any(e.file is not None and e.file.endswith("more.yaml") and "aliases expand" in e.message for e in errors)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: &x [*x]\n", 1),
        ("a: 1\nb: &x\n  c:\n    d: *x\n", 4),
        ("a: &x\n  b: 1\n  <<: *x\n", 3),
    ],
    ids=["sequence", "mapping", "merge-key"],
)
def test_a_self_referencing_alias_is_a_config_error_not_a_recursion_error(tmp_path: Path, text: str, line: int) -> None:
    [error] = errors_of(write(tmp_path, text))
    assert error.line == line, error.message
    assert "alias *x is used inside the value it names" in error.message
    assert f"crossdock.yaml:{line}: " in error.message


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path: Path) -> None:
    depth = 5000
    [error] = errors_of(write(tmp_path, "a: " + "[" * depth + "]" * depth + "\n"))
    assert error.line == 1
    assert f"deeper than {MAX_YAML_DEPTH} levels" in error.message


def test_nesting_just_inside_the_bound_loads(tmp_path: Path) -> None:
    depth = MAX_YAML_DEPTH - 2
    located = load_yaml(write(tmp_path, "a: " + "[" * depth + "]" * depth + "\n"))
    assert isinstance(located.data["a"], list)


def test_aliases_just_inside_the_bound_load(tmp_path: Path) -> None:
    size = 999
    uses = MAX_ALIAS_NODES // (size + 1) - 1
    text = "d: &d [" + ", ".join(["1"] * size) + "]\nuses:\n" + "".join("  - *d\n" for _ in range(uses))
    started = time.perf_counter()
    located = load_yaml(write(tmp_path, text))
    assert time.perf_counter() - started < 2.0
    assert len(located.data["uses"]) == uses


def test_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    text = """\
connections:
  shop: &http {type: http, base_url: "http://shop"}
  erp: {<<: *http, base_url: "http://erp"}
routes:
  r1: &route
    incoming:
      source: {type: file, path: data/in.ndjson}
    identifier: sku
    outgoing:
      target: &target {type: noop}
  r2:
    <<: *route
    identifier: [store, sku]
  r3:
    incoming: {source: {type: file, path: data/other.ndjson}}
    identifier: sku
    outgoing: {target: *target}
"""
    loaded = load_config(write(tmp_path, text), {})
    assert set(loaded.config.routes) == {"r1", "r2", "r3"}
    assert loaded.config.routes["r2"].identifier == ["store", "sku"]
    assert loaded.config.connections["erp"].base_url == "http://erp"
    assert loaded.config.connections["shop"].base_url == "http://shop"


def test_a_key_brought_in_by_a_merge_is_located_where_it_is_written(tmp_path: Path) -> None:
    text = "a: &d\n  x: 1\n  y: [1, 2]\nb:\n  <<: *d\n  x: 5\n"
    located = load_yaml(write(tmp_path, text))
    assert located.data["b"] == {"x": 5, "y": [1, 2]}
    assert located.where(("b", "x"))[1] == 6
    assert located.where(("b", "y"))[1] == 3


def test_composed_once_the_data_and_the_lines_see_the_same_document(tmp_path: Path) -> None:
    located = load_yaml(write(tmp_path, "a: &x {k: v}\nb: [*x, *x]\n"))
    assert located.data == {"a": {"k": "v"}, "b": [{"k": "v"}, {"k": "v"}]}
    assert located.where(("b", 1, "k"))[1] == 1
