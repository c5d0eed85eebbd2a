"""``validate.max_entity_bytes``: 10 MiB by default, null lifts it to the ceiling, and a record over it is
rejected without being stored whole (a 64 KiB preview as the raw record)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crossdock.config.models import DEFAULT_MAX_ENTITY_BYTES, MAX_ENTITY_BYTES_CEILING, ValidateConfig
from crossdock.engine.importer import RAW_LIMIT, Importer
from crossdock.engine.project import Project, load_project
from crossdock.errors import ConfigErrors
from crossdock.store import Store, open_store
from crossdock.store.base import TaskFilter
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Status, Task

LIMIT = 100_000  # over RAW_LIMIT, so a rejected record is cut to its preview

CONFIG = f"""\
database: sqlite:///unused.db
incomings:
  feed: {{source: {{type: file, path: in.ndjson}}}}
routes:
  plain:
    incoming: feed
    identifier: sku
    validate: {{max_entity_bytes: {LIMIT}}}
    outgoing: {{target: {{type: noop}}}}
  transformed:
    incoming: feed
    identifier: sku
    validate: {{max_entity_bytes: {LIMIT}}}
    transform: [{{set: {{path: via, value: t}}}}]
    outgoing: {{target: {{type: noop}}}}
  default:
    incoming: feed
    identifier: sku
    outgoing: {{target: {{type: noop}}}}
"""


def record(sku: str | None, size: int) -> dict[str, object]:
    """A record whose compact, sorted JSON is exactly ``size`` bytes."""
    base = {"sku": sku, "text": ""} if sku is not None else {"text": ""}
    return {**base, "text": "x" * (size - len(orjson.dumps(base)))}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store = MemoryStore() if request.param == "memory" else open_store(f"sqlite:///{tmp_path / 'x.db'}")
    yield opened
    opened.close()


def run(tmp_path: Path, store: Store, records: list[dict[str, object]]) -> Project:
    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    (tmp_path / "in.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    project = load_project(tmp_path / "crossdock.yaml")
    store.ensure_routes(project.routes)
    asyncio.run(Importer(project, store).run_incoming(project.incomings["feed"]))
    return project


def tasks_of(store: Store, route: str) -> dict[str | None, Task]:
    found = store.list_tasks(TaskFilter(route=route), limit=100)[0]
    return {t.identifier: store.get_task(t.id) for t in found}  # type: ignore[misc]


def test_the_default_is_10_mib_and_null_lifts_it_to_the_ceiling(tmp_path: Path) -> None:
    assert DEFAULT_MAX_ENTITY_BYTES == 10 * 1024 * 1024 == ValidateConfig().max_entity_bytes
    assert ValidateConfig.model_validate({"max_entity_bytes": None}).max_entity_bytes == MAX_ENTITY_BYTES_CEILING
    (tmp_path / "crossdock.yaml").write_text(CONFIG)
    assert load_project(tmp_path / "crossdock.yaml").routes["default"].config.validate_.max_entity_bytes == 10_485_760


@pytest.mark.parametrize(
    ("value", "words"), [(0, "null to lift the limit"), (MAX_ENTITY_BYTES_CEILING + 1, "less than or equal")]
)
def test_zero_and_over_the_ceiling_are_config_errors(tmp_path: Path, value: int, words: str) -> None:
    (tmp_path / "crossdock.yaml").write_text(
        CONFIG.replace(f"max_entity_bytes: {LIMIT}}}", f"max_entity_bytes: {value}}}", 1)
    )
    with pytest.raises(ConfigErrors) as caught:
        load_project(tmp_path / "crossdock.yaml")
    message = "\n".join(e.message for e in caught.value.errors)
    assert "max_entity_bytes" in message and words in message


def test_a_record_just_over_the_limit_is_rejected_and_kept_only_as_a_preview(tmp_path: Path, store: Store) -> None:
    transform_adds = len(b',"via":"t"')
    run(
        tmp_path,
        store,
        [
            record("AT", LIMIT - transform_adds),  # exactly at the limit on both routes
            record("OVER", LIMIT + 1),
            record(None, LIMIT + 1),  # no identifier and too big: still not stored whole
        ],
    )
    for route in ("plain", "transformed"):
        tasks = tasks_of(store, route)
        assert tasks["AT"].status is Status.NEW, route
        over = tasks["OVER"]
        assert over.status is Status.REJECTED
        error = over.error or ""
        assert "validate.max_entity_bytes" in error and f"over the limit of {LIMIT}" in error
        assert f"only its first {RAW_LIMIT // 1024} KiB are kept" in error
        assert over.entity is None
        assert over.raw is not None and len(over.raw) == RAW_LIMIT and over.raw.startswith('{"sku":"OVER"')
        nameless = tasks[None]
        assert nameless.status is Status.REJECTED and nameless.entity is None
        assert nameless.raw is not None and len(nameless.raw) == RAW_LIMIT
        assert "identifier sku is missing" in (nameless.error or "") and "max_entity_bytes" in (nameless.error or "")
    # the default limit (10 MiB) lets all of them through
    assert tasks_of(store, "default")["OVER"].status is Status.NEW


def test_the_same_oversized_record_polled_again_touches_its_task(tmp_path: Path, store: Store) -> None:
    big = record("OVER", LIMIT * 2)
    run(tmp_path, store, [big])
    run(tmp_path, store, [big])
    found = store.list_tasks(TaskFilter(route="plain"), limit=100)[0]
    assert len(found) == 1 and found[0].seen_count == 2


def test_a_small_limit_still_keeps_the_small_rejected_entity(tmp_path: Path, store: Store) -> None:
    """Under the preview size nothing is cut: the person reading the rejected task sees the whole entity."""
    (tmp_path / "crossdock.yaml").write_text(CONFIG.replace(f"max_entity_bytes: {LIMIT}}}", "max_entity_bytes: 200}"))
    (tmp_path / "in.ndjson").write_bytes(orjson.dumps(record("BIG", 300)) + b"\n")
    project = load_project(tmp_path / "crossdock.yaml")
    store.ensure_routes(project.routes)
    asyncio.run(Importer(project, store).run_incoming(project.incomings["feed"]))
    big = tasks_of(store, "plain")["BIG"]
    assert big.status is Status.REJECTED and big.entity == record("BIG", 300) and big.raw is None
    assert "entity is 300 bytes, over the limit of 200" in (big.error or "")
