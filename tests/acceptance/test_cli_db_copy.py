"""``crossdock db copy --to URL`` through the real CLI: the config's SQLite database moves to PostgreSQL, ``stats
--verify`` on the target agrees, a second run copies nothing twice, the way back works, and a target holding another
installation's data is refused with what to do."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

import crossdock
from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement
from crossdock.tasks import Action, Status
from postgres_support import create_database, drop_database

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def pg() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


def crossdock_cli(root: Path, *args: str) -> tuple[int, Any, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(crossdock.__file__).resolve().parent.parent)}
    env.pop("CROSSDOCK_DB", None)
    env["CROSSDOCK_CONFIG"] = str(root / "crossdock.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", *args, "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        data = orjson.loads(done.stdout)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not JSON from {args}: {done.stdout}\n{done.stderr}") from None
    return done.returncode, data, done.stderr


def fill(url: str, route: str, n: int) -> None:
    store = open_store(url)
    try:
        items = []
        for i in range(n):
            body = orjson.dumps({"id": i, "name": f"item {i}"})
            items.append(ImportItem(Status.NEW, str(i), body, hashlib.sha256(body).digest()[:16]))
        store.import_batch(route, items, run_id=None, options=ImportOptions(), now=T0)
        claimed = store.claim_due_tasks(route, n // 2, worker="w", lease_until=T0 + timedelta(minutes=1), now=T0)
        store.settle(
            [Settlement(t.id, Action.DELIVERED if t.id % 3 else Action.DELIVERY_FAILED, "w") for t in claimed], now=T0
        )
        store.storage_put("cursor", route, {"page": 7}, now=T0)
        store.create_token("ci", "operator", hashlib.sha256(route.encode()).hexdigest(), now=T0)
    finally:
        store.close()


def test_db_copy_moves_the_configured_database_to_postgresql_and_back(tmp_path: Path, pg: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "crossdock.yaml").write_text("database: sqlite:///data/crossdock.db\nroutes: {}\n")
    fill(f"sqlite:///{tmp_path / 'data' / 'crossdock.db'}", "products", 500)

    code, report, stderr = crossdock_cli(tmp_path, "db", "copy", "--to", pg)

    assert code == 0, stderr
    assert report["status"] == "ok"
    assert report["resumed"] is False
    assert report["tables"]["tasks"] == {"source": 500, "target": 500, "copied": 500}
    assert report["tables"]["tokens"]["target"] == 1
    assert report["drift"] == {} and report["recount_diff"] == {}
    code, stats, stderr = crossdock_cli(tmp_path, "stats", "--verify", "--db", pg)
    assert code == 0, stderr
    assert stats["total"] == 500 and stats["drift"] == {}
    _, source_stats, _ = crossdock_cli(tmp_path, "stats")
    assert stats["by_status"] == source_stats["by_status"]

    code, again, stderr = crossdock_cli(tmp_path, "db", "copy", "--to", pg)
    assert code == 0, stderr
    assert again["resumed"] is True
    assert again["tables"]["tasks"] == {"source": 500, "target": 500, "copied": 0}

    back = f"sqlite:///{tmp_path / 'new-folder' / 'back.db'}"  # a folder that does not exist yet
    code, report, stderr = crossdock_cli(tmp_path, "db", "copy", "--db", pg, "--to", back)
    assert code == 0, stderr
    assert report["tables"]["tasks"]["target"] == 500
    _, back_stats, _ = crossdock_cli(tmp_path, "stats", "--verify", "--db", back)
    assert back_stats["by_status"] == source_stats["by_status"] and back_stats["drift"] == {}


def test_db_copy_refuses_a_target_with_another_installation(tmp_path: Path, pg: str) -> None:
    (tmp_path / "crossdock.yaml").write_text("database: sqlite:///crossdock.db\n")
    fill(f"sqlite:///{tmp_path / 'crossdock.db'}", "products", 20)
    fill(pg, "orders", 5)

    code, report, stderr = crossdock_cli(tmp_path, "db", "copy", "--to", pg)

    assert code == 1
    assert report["status"] == "error"
    assert "already holds other data" in stderr and "--force" in stderr
    code, report, stderr = crossdock_cli(tmp_path, "db", "copy", "--to", pg, "--force")
    assert code == 0, stderr
    assert report["forced"] is True and report["tables"]["tasks"]["target"] == 20
