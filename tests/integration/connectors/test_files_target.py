"""The file target: one file per batch written atomically, NDJSON/CSV/JSON, and the old append mode kept."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.errors import ConfigErrors
from crossdock.store import Store, open_store
from crossdock.store.base import TaskFilter
from crossdock.tasks import Status

PRODUCTS = [{"sku": f"P-{i}", "name": f"thing {i}", "price": i * 1.5, "tags": ["x", i]} for i in range(4)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in.ndjson").write_text("".join(json.dumps(p) + "\n" for p in PRODUCTS))
    return tmp_path


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    opened: list[Store] = []
    yield opened
    for s in opened:
        s.close()


def project(folder: Path, target: str, stores: list[Store]) -> tuple[Project, Store]:
    (folder / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        f"    outgoing: {{target: {target}}}\n"
    )
    proj = load_project(folder / "crossdock.yaml")
    store = open_store(proj.database_url(), base=proj.root)
    store.ensure_routes(proj.routes)
    stores.append(store)
    return proj, store


def run(proj: Project, store: Store) -> dict[str, int]:
    return asyncio.run(run_once(proj, store, "r"))["by_status"]  # type: ignore[no-any-return]


def test_the_old_config_still_appends(folder: Path, stores: list[Store]) -> None:
    proj, store = project(folder, "{type: file, path: out/all.ndjson}", stores)
    assert run(proj, store)["finished"] == 4
    (folder / "in.ndjson").write_text(json.dumps({"sku": "P-9"}) + "\n")
    run(proj, store)
    lines = (folder / "out" / "all.ndjson").read_text().splitlines()
    assert [json.loads(line)["sku"] for line in lines] == ["P-0", "P-1", "P-2", "P-3", "P-9"]


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
def test_one_file_per_batch_atomically_never_overwriting(folder: Path, stores: list[Store], fmt: str) -> None:
    proj, store = project(folder, f"{{type: file, path: 'out/products-{{date}}.{fmt}'}}", stores)
    assert run(proj, store)["finished"] == 4
    (folder / "in.ndjson").write_text(json.dumps({"sku": "P-9", "name": "late", "price": 1, "tags": []}) + "\n")
    assert run(proj, store)["finished"] == 5
    files = sorted((folder / "out").iterdir(), key=lambda p: (len(p.name), p.name))
    assert len(files) == 2 and files[1].name == files[0].name.replace(f".{fmt}", f"-1.{fmt}")
    assert not list((folder / "out").glob(".*")), "no temp file is left behind"
    text = files[0].read_text()
    if fmt == "ndjson":
        assert [json.loads(line) for line in text.splitlines()] == PRODUCTS
    elif fmt == "json":
        assert json.loads(text) == PRODUCTS
    else:
        rows = list(csv.DictReader(text.splitlines()))
        assert rows[1] == {"sku": "P-1", "name": "thing 1", "price": "1.5", "tags": '["x",1]'}
    task = store.list_tasks(TaskFilter(route="r", identifier="P-0"), limit=1)[0][0]
    assert task.status is Status.FINISHED
    assert any(f"written to out/{files[0].name}" in line.message for line in store.task_logs(task.id))


def test_csv_columns_from_config_or_the_first_entity(folder: Path, stores: list[Store]) -> None:
    rows = [{"sku": "A", "name": "a"}, {"sku": "B", "name": "b", "surprise": 1}, {"sku": "C"}]
    (folder / "in.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proj, store = project(folder, "{type: file, path: 'out/{run}.csv', delimiter: ';'}", stores)
    counts = run(proj, store)
    assert (counts["finished"], counts["failed"]) == (2, 1)
    failed = store.list_tasks(TaskFilter(route="r", statuses=[Status.FAILED]), limit=1)[0][0]
    assert failed.identifier == "B" and "surprise" in (failed.error or "")
    (written,) = list((folder / "out").iterdir())
    # entities are stored with sorted keys, so inferred columns come sorted; set columns: to choose the order
    assert written.read_text().splitlines() == ["name;sku", "a;A", ";C"]


def test_csv_with_configured_columns_selects_them(folder: Path, stores: list[Store]) -> None:
    rows = [{"sku": "A", "name": "a"}, {"sku": "B", "name": "b", "surprise": 1}, {"sku": "C"}]
    (folder / "in.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proj, store = project(folder, "{type: file, path: 'out/{run}.csv', columns: [name, sku]}", stores)
    assert run(proj, store)["finished"] == 3
    (written,) = list((folder / "out").iterdir())
    assert written.read_text().splitlines() == ["name,sku", "a,A", "b,B", ",C"]


def test_a_write_failure_leaves_tasks_to_retry_and_no_partial_file(folder: Path, stores: list[Store]) -> None:
    (folder / "out").write_text("a file where the folder should be")
    proj, store = project(folder, "{type: file, path: 'out/x/{run}.ndjson'}", stores)
    (folder / "crossdock.yaml").write_text(
        (folder / "crossdock.yaml").read_text() + "    retry: {max_attempts: 3, backoff: 60s}\n"
    )
    proj = load_project(folder / "crossdock.yaml")
    assert run(proj, store)["retry"] == 4
    task = store.list_tasks(TaskFilter(route="r"), limit=1)[0][0]
    assert "cannot write out/x/" in (task.error or "")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{type: file, path: out.csv, mode: append}", "mode: append works for NDJSON only"),
        ("{type: file, path: 'out-{nope}.ndjson'}", "bad placeholder"),
        ("{type: file, path: out.txt}", "cannot tell the format"),
    ],
)
def test_target_config_errors(folder: Path, stores: list[Store], target: str, message: str) -> None:
    with pytest.raises(ConfigErrors, match=message):
        project(folder, target, stores)
