"""The file source through a real import (SQLite store): every format and encoding, after-read actions on commit,
and files skipped by content hash."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crossdock.connectors.files import file_digest
from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.errors import ConfigErrors
from crossdock.store import Store, open_store
from crossdock.store.base import TaskFilter
from crossdock.tasks import Status

PRODUCTS = [
    {"sku": "A-1", "name": "Äpfel", "stock": "3"},
    {"sku": "B-2", "name": "Birne €", "stock": "0"},
    {"sku": "C-3", "name": "Çitron", "stock": "12"},
]


class Env:
    """A project folder with one route ``r`` whose source we vary, and its store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: list[Store] = []

    def project(self, source: str, target: str = "{type: noop}") -> tuple[Project, Store]:
        (self.root / "crossdock.yaml").write_text(
            f"routes:\n  r:\n    incoming: {{source: {source}}}\n    identifier: sku\n"
            f"    outgoing: {{target: {target}}}\n"
        )
        project = load_project(self.root / "crossdock.yaml")
        store = open_store(project.database_url(), base=project.root)
        store.ensure_routes(project.routes)
        self.stores.append(store)
        return project, store

    def write(self, name: str, data: str | bytes, encoding: str = "utf-8") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
        return path


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    for s in e.stores:
        s.close()


def run(project: Project, store: Store, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(run_once(project, store, "r", outgoing=False, **kwargs))["incoming"]  # type: ignore[no-any-return]


def entities(store: Store, status: Status = Status.NEW) -> dict[str, Any]:
    tasks, _ = store.list_tasks(TaskFilter(statuses=[status], route="r"), limit=1000)
    return {t.identifier or str(t.id): t.entity for t in tasks}


def ndjson(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def csv_text(records: list[dict[str, Any]], delimiter: str = ",") -> str:
    lines = [delimiter.join(records[0])] + [delimiter.join(r.values()) for r in records]
    return "\r\n".join(lines) + "\r\n"


def xml_text(records: list[dict[str, Any]], encoding: str = "utf-8") -> str:
    body = "".join(
        f'<product id="{i}"><sku>{r["sku"]}</sku><name>{r["name"]}</name><stock>{r["stock"]}</stock></product>\n'
        for i, r in enumerate(records)
    )
    return f'<?xml version="1.0" encoding="{encoding}"?>\n<catalog>\n{body}</catalog>\n'


# --- formats and encodings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "utf-16"])
@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv", "xml"])
def test_every_format_in_every_encoding(env: Env, fmt: str, encoding: str) -> None:
    if fmt == "ndjson":
        text, extra = ndjson(PRODUCTS), ""
    elif fmt == "json":
        text, extra = json.dumps({"items": PRODUCTS}, ensure_ascii=False), ", records: items"
    elif fmt == "csv":
        text, extra = csv_text(PRODUCTS, ";"), ', delimiter: ";"'
    else:
        # the document declares UTF-8 wrongly for the others; the configured encoding wins
        text, extra = xml_text(PRODUCTS), ", record: product"
    env.write(f"in/products.{fmt}", text, encoding)
    project, store = env.project(f"{{type: file, path: in/products.{fmt}, encoding: {encoding}{extra}}}")
    summary = run(project, store)
    assert summary["status"] == "ok", summary["error"]
    got = entities(store)
    assert sorted(got) == ["A-1", "B-2", "C-3"]
    if fmt == "xml":
        assert got["B-2"] == {"@id": "1", "sku": "B-2", "name": "Birne €", "stock": "0"}
    else:
        assert got["B-2"] == PRODUCTS[1]
        assert got["A-1"]["name"] == "Äpfel"


def test_defaults_read_utf8_with_a_byte_order_mark(env: Env) -> None:
    env.write("a.csv", "\ufeff" + csv_text(PRODUCTS))
    env.write("b.ndjson", "\ufeff" + ndjson(PRODUCTS[:1]))
    project, store = env.project("{type: file, path: a.csv}")
    assert run(project, store)["read"] == 3
    assert entities(store)["A-1"] == PRODUCTS[0]  # the first column is "sku", not "\ufeffsku"
    project, store = env.project("{type: file, path: b.ndjson}")
    assert run(project, store)["routes"]["r"]["rejected"] == 0


def test_xml_declared_encoding_is_honoured_without_configuration(env: Env) -> None:
    env.write("p.xml", xml_text(PRODUCTS, "ISO-8859-15"), "iso-8859-15")
    project, store = env.project("{type: file, path: p.xml, record: product}")
    assert run(project, store)["status"] == "ok"
    assert entities(store)["B-2"]["name"] == "Birne €"


def test_xml_records_keep_structure(env: Env) -> None:
    env.write(
        "p.xml",
        """<?xml version="1.0"?>
<feed xmlns:g="http://base.google.com/ns/1.0">
  <meta><generated>today</generated></meta>
  <items>
    <g:item id="7" lang="de">
      <g:sku>X-7</g:sku>
      <price currency="EUR">9.99</price>
      <tag>a</tag><tag>b</tag><tag>c</tag>
      <empty/>
      <variants><variant><size>S</size></variant><variant><size>M</size></variant></variants>
      <item><sku>nested-not-a-record</sku></item>
    </g:item>
    <g:item id="8"><g:sku>X-8</g:sku><tag>only</tag></g:item>
  </items>
</feed>""",
    )
    project, store = env.project("{type: file, path: p.xml, record: item}")
    assert run(project, store)["read"] == 2
    got = entities(store)
    assert got["X-7"] == {
        "@id": "7",
        "@lang": "de",
        "sku": "X-7",
        "price": {"@currency": "EUR", "#text": "9.99"},
        "tag": ["a", "b", "c"],
        "empty": None,
        "variants": {"variant": [{"size": "S"}, {"size": "M"}]},
        "item": {"sku": "nested-not-a-record"},
    }
    assert got["X-8"] == {"@id": "8", "sku": "X-8", "tag": "only"}


def test_xml_needs_a_record_element(env: Env) -> None:
    env.write("p.xml", xml_text(PRODUCTS))
    with pytest.raises(ConfigErrors, match="record: ELEMENT"):
        env.project("{type: file, path: p.xml}")


# --- after reading -----------------------------------------------------------------------------------------------


def test_after_keep_leaves_the_file(env: Env) -> None:
    path = env.write("in/a.ndjson", ndjson(PRODUCTS))
    project, store = env.project("{type: file, path: 'in/*.ndjson'}")
    assert run(project, store)["read"] == 3
    assert path.exists()


def test_after_delete_removes_the_file_once_committed(env: Env) -> None:
    path = env.write("in/a.ndjson", ndjson(PRODUCTS))
    project, store = env.project("{type: file, path: 'in/*.ndjson', after: delete}")
    assert run(project, store)["read"] == 3
    assert not path.exists()
    assert len(entities(store)) == 3
    # the next run finds nothing and is fine
    assert run(project, store)["status"] == "ok"


def test_after_move_to_processed_beside_the_file_without_overwriting(env: Env) -> None:
    env.write("in/processed/a.csv", "kept from before")
    env.write("in/a.csv", csv_text(PRODUCTS))
    env.write("in/b.csv", csv_text(PRODUCTS[:1]))
    project, store = env.project("{type: file, path: 'in/*.csv', after: move}")
    summary = run(project, store)
    assert summary["read"] == 4
    assert summary["source"] == {"files_read": 2, "files_skipped": 0}
    assert sorted(p.name for p in (env.root / "in").iterdir()) == ["processed"]
    moved = env.root / "in" / "processed"
    assert sorted(p.name for p in moved.iterdir()) == ["a-1.csv", "a.csv", "b.csv"]
    assert (moved / "a.csv").read_text() == "kept from before"
    assert (moved / "a-1.csv").read_bytes() == csv_text(PRODUCTS).encode()


def test_after_move_to_a_folder_and_a_fixed_path_that_is_gone_is_not_an_error(env: Env) -> None:
    env.write("drop/products.ndjson", ndjson(PRODUCTS))
    project, store = env.project("{type: file, path: drop/products.ndjson, after: move, move_to: archive/2024}")
    assert run(project, store)["read"] == 3
    assert (env.root / "archive" / "2024" / "products.ndjson").exists()
    again = run(project, store)
    assert (again["status"], again["read"]) == ("ok", 0)


def test_move_to_needs_after_move(env: Env) -> None:
    with pytest.raises(ConfigErrors, match="move_to: needs after: move"):
        env.project("{type: file, path: 'in/*.csv', move_to: done}")


def test_a_failed_run_moves_and_remembers_nothing(env: Env) -> None:
    good = env.write("in/1-good.json", json.dumps(PRODUCTS))
    bad = env.write("in/2-truncated.json", json.dumps(PRODUCTS)[:-30])
    project, store = env.project("{type: file, path: 'in/*.json', after: move}")
    summary = run(project, store)
    assert summary["status"] == "failed"
    assert "2-truncated.json" in summary["error"] and "truncated JSON" in summary["error"]
    assert good.exists() and bad.exists(), "nothing is moved when the run failed"
    # the records read before the failure were committed, nothing is lost
    assert sorted(entities(store)) == ["A-1", "B-2", "C-3"]
    bad.write_text(json.dumps([{"sku": "D-4"}]))
    second = run(project, store)
    assert second["status"] == "ok"
    assert second["source"] == {"files_read": 2, "files_skipped": 0}, "the failed run remembered no hash"
    assert second["routes"]["r"]["unchanged"] == 3
    assert sorted(entities(store)) == ["A-1", "B-2", "C-3", "D-4"]
    assert not good.exists() and not bad.exists()


# --- content hashes ----------------------------------------------------------------------------------------------


def test_a_second_run_skips_files_already_imported_and_a_changed_file_is_imported(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.write("in/a.ndjson", ndjson(PRODUCTS[:2]))
    env.write("in/b.ndjson", ndjson(PRODUCTS[2:]))
    project, store = env.project("{type: file, path: 'in/*.ndjson'}")
    first = run(project, store)
    assert (first["read"], first["source"]) == (3, {"files_read": 2, "files_skipped": 0})

    with caplog.at_level(logging.INFO, logger="crossdock.connectors.files"):
        second = run(project, store)
    assert (second["read"], second["source"]) == (0, {"files_read": 0, "files_skipped": 2})
    assert "a.ndjson: skipped, already imported" in caplog.text
    runs = store.list_runs("r")
    assert runs[0].summary["source"] == {"files_read": 0, "files_skipped": 2}

    changed = [*PRODUCTS[:2], {"sku": "Z-9", "name": "new", "stock": "1"}]
    env.write("in/a.ndjson", ndjson(changed))
    # the same bytes under another name are the same file
    env.write("in/c-copy-of-b.ndjson", ndjson(PRODUCTS[2:]))
    third = run(project, store)
    assert (third["read"], third["source"]) == (3, {"files_read": 1, "files_skipped": 2})
    assert third["routes"]["r"]["new"] == 1
    assert "Z-9" in entities(store)

    full = run(project, store, full=True)
    assert full["source"] == {"files_read": 2, "files_skipped": 1}, "--full reads them again (the copy once)"


def test_skipped_files_are_moved_too_and_hashes_live_in_the_store(env: Env) -> None:
    env.write("in/a.csv", csv_text(PRODUCTS))
    project, store = env.project("{type: file, path: 'in/*.csv', after: move, move_to: done}")
    run(project, store)
    env.write("in/a.csv", csv_text(PRODUCTS))  # the partner drops the very same file again
    second = run(project, store)
    assert second["source"] == {"files_read": 0, "files_skipped": 1}
    assert sorted(p.name for p in (env.root / "done").iterdir()) == ["a-1.csv", "a.csv"]
    assert not (env.root / "in" / "a.csv").exists()
    seen = store.storage_get("_files:r", file_digest(env.root / "done" / "a.csv"), now=datetime.now(UTC))
    assert seen is not None and seen["name"] == "a.csv"


def test_a_fixed_path_is_read_every_run_by_default(env: Env) -> None:
    """Backwards compatible: a feed rewritten in place is re-read, and delta marks unchanged records."""
    env.write("data.ndjson", ndjson(PRODUCTS))
    project, store = env.project("{type: file, path: data.ndjson}")
    run(project, store)
    again = run(project, store)
    assert (again["read"], again["routes"]["r"]["unchanged"]) == (3, 3)
    project, store = env.project("{type: file, path: data.ndjson, skip_imported: true}")
    assert run(project, store)["source"] == {"files_read": 1, "files_skipped": 0}
    assert run(project, store)["source"] == {"files_read": 0, "files_skipped": 1}
