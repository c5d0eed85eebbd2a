"""Delta detection through the CLI: unchanged records, changed ones, supersede, failed records, a killed importer,
the cache commands and full runs."""

from __future__ import annotations

import random
import signal
import sqlite3
from typing import Any

import orjson
import pytest

from crossdock.mock import RunningShop

ALL_STATUSES = ["new", "processing", "finished", "failed", "skipped", "rejected", "waiting", "retry"]


def counts(**nonzero: int) -> dict[str, int]:
    return {s: nonzero.get(s, 0) for s in ALL_STATUSES}


def noop_route(project: Any, **kw: Any) -> None:
    project.write_config(project.route_yaml(connections=False, target="{type: noop}", **kw))


def reordered(record: dict[str, Any]) -> dict[str, Any]:
    return dict(reversed(list(record.items())))


# --- 1 and 2. repeated imports of 10,000 records; 1% changed, 10% reordered --------------------------------------


def test_repeated_imports_of_the_same_file_add_no_tasks(project: Any) -> None:
    n = 10_000
    records = project.products(n)
    project.write_ndjson("data/in.ndjson", records)
    noop_route(project)
    first = project.run("r")
    assert first["by_status"] == counts(finished=n)

    second = project.run("r", "--incoming")
    summary = second["incoming"]["routes"]["r"]
    assert (summary["new"], summary["unchanged"], summary["changed"]) == (0, n, 0)
    stats = project.stats()
    assert stats["total"] == 2 * n
    assert stats["by_status"] == counts(finished=n, skipped=n)

    third = project.run("r", "--incoming")
    summary = third["incoming"]["routes"]["r"]
    assert (summary["new"], summary["unchanged"], summary["changed"]) == (0, n, 0)
    stats = project.stats()
    assert stats["total"] == 2 * n, "an unchanged re-import must not add rows"
    assert stats["by_status"] == counts(finished=n, skipped=n)
    [skipped] = project.tasks("--status", "skipped", "--identifier", "SKU-000042")
    shown = project.show(skipped["id"])
    assert shown["seen_count"] == 2
    assert shown["entity"] == records[41]
    assert "unchanged" in (shown["error"] or "")

    # 1% changed, another 10% only with their keys in another order
    rng = random.Random(5)
    order = list(range(n))
    rng.shuffle(order)
    changed_idx = set(order[:100])
    reordered_idx = set(order[100:1100])
    edited = []
    for i, r in enumerate(records):
        if i in changed_idx:
            edited.append({**r, "price": "0.01"})
        elif i in reordered_idx:
            edited.append(reordered(r))
        else:
            edited.append(r)
    assert list(edited[min(reordered_idx)]) != list(records[min(reordered_idx)])
    project.write_ndjson("data/in.ndjson", edited)
    fourth = project.run("r", "--incoming")
    summary = fourth["incoming"]["routes"]["r"]
    assert summary["new"] == 100
    assert summary["changed"] == 100
    assert summary["unchanged"] == n - 100
    stats = project.stats()
    assert stats["by_status"] == counts(finished=n, skipped=n, new=100)
    assert stats["total"] == 2 * n + 100
    new_ids = {t["identifier"] for t in project.tasks("--status", "new")}
    assert new_ids == {records[i]["sku"] for i in changed_idx}


# --- 3. supersede ------------------------------------------------------------------------------------------------


def test_two_changes_before_export_deliver_only_the_latest(project: Any, shop: RunningShop) -> None:
    records = project.products(3)
    project.write_ndjson("data/in.ndjson", records)
    project.write_config(project.route_yaml())
    project.run("r", "--incoming")
    v2 = [{**records[0], "title": "second"}, *records[1:]]
    project.write_ndjson("data/in.ndjson", v2)
    project.run("r", "--incoming")
    v3 = [{**records[0], "title": "third"}, *records[1:]]
    project.write_ndjson("data/in.ndjson", v3)
    project.run("r", "--incoming")

    sku = records[0]["sku"]
    tasks = sorted(project.tasks("--identifier", sku), key=lambda t: t["id"])
    assert [t["status"] for t in tasks] == ["skipped", "skipped", "new"]
    assert tasks[0]["error"] == f"superseded by task {tasks[1]['id']}"
    assert tasks[1]["error"] == f"superseded by task {tasks[2]['id']}"
    assert tasks[0]["related_task_id"] == tasks[1]["id"]

    run = project.run("r", "--outgoing")
    assert run["outgoing"]["claimed"] == 3
    assert shop.by_sku[sku]["title"] == "third"
    assert [r.body["title"] for r in shop.received if r.sku == sku] == ["third"]
    assert shop.stats()["requests"] == 3
    assert project.stats()["by_status"] == counts(finished=3, skipped=2)


def test_two_versions_in_one_file_deliver_only_the_latest(project: Any, shop: RunningShop) -> None:
    records = project.products(2)
    project.write_ndjson("data/in.ndjson", [records[0], records[1], {**records[0], "title": "later"}])
    project.write_config(project.route_yaml())
    run = project.run("r")
    assert run["by_status"] == counts(finished=2, skipped=1)
    assert shop.by_sku[records[0]["sku"]]["title"] == "later"
    assert shop.stats()["requests"] == 2
    [old] = project.tasks("--status", "skipped")
    assert old["error"].startswith("superseded by task ")


# --- 4. a refused record is not resent on every poll; finished ones are skipped ---------------------------------


def test_an_unchanged_refused_record_is_touched_not_resent_on_every_poll(project: Any, shop_factory: Any) -> None:
    """Polled 5 times unchanged: one failed task seen 5 times, one request at the target (no resend storm)."""
    shop = shop_factory(status_for_skus={"SKU-000001": 422})
    project.write_ndjson("data/in.ndjson", project.products(2))
    project.write_config(project.route_yaml())
    for _poll in range(5):
        project.run("r")
    [failed] = project.tasks("--identifier", "SKU-000001")
    assert (failed["status"], failed["seen_count"]) == ("failed", 5)
    finished_sku = sorted(project.tasks("--identifier", "SKU-000002"), key=lambda t: t["id"])
    assert [t["status"] for t in finished_sku] == ["finished", "skipped"]
    assert shop.stats()["requests"] == 2, "each product reached the shop once"
    assert shop.stats()["by_status"] == {"201": 1, "422": 1}


def test_resend_failed_period_sends_an_unchanged_refused_record_at_most_once_per_period(
    project: Any, shop_factory: Any
) -> None:
    shop = shop_factory(status_for_skus={"SKU-000001": 422})
    project.write_ndjson("data/in.ndjson", project.products(1))
    project.write_config(project.route_yaml(extra="    resend_failed: 1h\n"))
    for _poll in range(3):
        project.run("r")
    [failed] = project.tasks("--identifier", "SKU-000001")
    assert (failed["status"], failed["seen_count"]) == ("failed", 3)
    assert shop.stats()["requests"] == 1, "one request within the hour"


def test_resend_failed_true_gives_each_poll_a_new_task_and_a_retry_sends_the_record_once(
    project: Any, shop_factory: Any
) -> None:
    """The old behaviour on request; a bulk retry of the copies sends the newest and supersedes the others."""
    shop = shop_factory(status_for_skus={"SKU-000001": 422})
    project.write_ndjson("data/in.ndjson", project.products(1))
    project.write_config(project.route_yaml(extra="    resend_failed: true\n"))
    for _poll in range(3):
        project.run("r")
    copies = sorted(project.tasks("--identifier", "SKU-000001"), key=lambda t: t["id"])
    assert [t["status"] for t in copies] == ["failed"] * 3
    assert shop.stats()["requests"] == 3
    shop.set_failures()
    retried = project.cli("tasks", "retry", "--status", "failed", "--route", "r", "--json").json
    assert (retried["changed"], retried["superseded"]) == (3, 2)
    assert project.run("r", "--outgoing")["by_status"] == counts(finished=1, skipped=2)
    assert shop.stats()["requests"] == 4, "the retry sent the record once"
    after = sorted(project.tasks("--identifier", "SKU-000001"), key=lambda t: t["id"])
    newest = after[-1]["id"]
    assert [t["status"] for t in after] == ["skipped", "skipped", "finished"]
    assert all(t["error"] == f"superseded by task {newest}" for t in after[:2])


# --- 5. a killed importer ----------------------------------------------------------------------------------------


def _task_rows(db: Any) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_during_import_then_rerun_gives_one_task_per_record(project: Any) -> None:
    n = 100_000
    with open(project.root / "in.tmp", "wb") as handle:
        for i in range(n):
            handle.write(orjson.dumps({"sku": f"K{i:07d}", "title": f"Product {i}", "n": i}) + b"\n")
    (project.root / "data").mkdir()
    (project.root / "in.tmp").rename(project.root / "data" / "in.ndjson")
    noop_route(project, incoming_extra="      batch_size: 5000\n")
    proc = project.popen("run", "r", "--incoming")
    try:
        reached = project.wait_for(lambda: _task_rows(project.db_path) >= 10_000, timeout=60, interval=0.02)
        assert reached, "the import did not commit a batch in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial = _task_rows(project.db_path)
    assert 0 < partial < n, f"the kill came too late to test anything ({partial} rows)"

    rerun = project.run("r", "--incoming")
    summary = rerun["incoming"]["routes"]["r"]
    assert summary["new"] == n - partial
    assert summary["unchanged"] == partial
    stats = project.stats()
    assert stats["total"] == n
    assert stats["by_status"] == counts(new=n)
    project.cli("stats", "--verify")
    store = project.open_store()
    with sqlite3.connect(project.db_path) as conn:
        dupes = conn.execute(
            "SELECT COUNT(*) FROM (SELECT identifier FROM tasks GROUP BY identifier HAVING COUNT(*) > 1)"
        )
        assert dupes.fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(DISTINCT identifier) FROM tasks").fetchone()[0] == n
        # every task kept its fingerprint through the kill, and the delta cache points at it
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE fingerprint IS NULL").fetchone()[0] == 0
        sample = conn.execute(
            "SELECT identifier, id, hex(fingerprint) FROM tasks ORDER BY random() LIMIT 50"
        ).fetchall()
    conn.close()
    try:
        assert store.recount() == {"r": counts(new=n)}
        for ident, task_id, fingerprint in sample:
            entry = store.cache_show("r", ident)
            assert entry is not None and entry.task_id == task_id
            assert entry.fingerprint == fingerprint.lower()
    finally:
        store.close()


def test_import_transactions_hold_at_most_batch_size_records(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(5000))
    noop_route(project, incoming_extra="      batch_size: 1000\n")
    project.run("r", "--incoming")
    with sqlite3.connect(project.db_path) as conn:
        sizes = [n for (n,) in conn.execute("SELECT COUNT(*) FROM tasks GROUP BY created_at")]
    conn.close()
    assert sum(sizes) == 5000
    assert max(sizes) <= 1000, sizes


# --- 6. cache commands and full runs ------------------------------------------------------------------------------


def test_cache_show_clear_and_full_run(project: Any) -> None:
    records = project.products(5)
    project.write_ndjson("data/in.ndjson", records)
    noop_route(project)
    project.run("r")
    [task] = project.tasks("--identifier", "SKU-000003")
    shown = project.cli("cache", "show", "r", "--identifier", "SKU-000003", "--json").json
    assert shown["route"] == "r" and shown["identifier"] == "SKU-000003"
    assert shown["task_id"] == task["id"]
    assert shown["task_status"] == "finished"
    assert shown["fingerprint"]
    assert project.cli("cache", "show", "r", "--identifier", "NOPE", "--json", expect=None).code == 1

    full = project.run("r", "--full", "--incoming")
    assert full["incoming"]["routes"]["r"]["new"] == 5
    assert project.stats()["by_status"] == counts(finished=5, new=5)
    project.run("r", "--outgoing")
    after_full = project.cli("cache", "show", "r", "--identifier", "SKU-000003", "--json").json
    assert after_full["task_id"] != task["id"]
    # an ordinary run after a full one is back to delta
    assert project.run("r", "--incoming")["incoming"]["routes"]["r"]["new"] == 0

    cleared = project.cli("cache", "clear", "r", "--json").json
    assert cleared == {"cleared": 5}
    assert project.cli("cache", "show", "r", "--identifier", "SKU-000003", "--json", expect=None).code == 1
    again = project.run("r", "--incoming")
    assert again["incoming"]["routes"]["r"]["new"] == 5


def test_a_broken_record_polled_again_keeps_one_rejected_task(project: Any) -> None:
    """A malformed line and a record without its identifier, in a file polled again and again: one rejected task
    each, seen once per poll. Fixed upstream, the record comes in under its identifier."""
    records = project.products(3)
    path = project.write_ndjson("data/in.ndjson", records)
    without_sku = {k: v for k, v in records[1].items() if k != "sku"}
    good = path.read_bytes()
    path.write_bytes(good + b"{broken\n" + orjson.dumps(without_sku) + b"\n")
    noop_route(project)
    for _ in range(3):
        summary = project.run("r", "--incoming")["incoming"]["routes"]["r"]
        assert summary["rejected"] == 2
    rejected = project.tasks("--status", "rejected")
    assert len(rejected) == 2
    assert sorted(project.show(t["id"])["seen_count"] for t in rejected) == [3, 3]
    # another broken line is a task of its own
    path.write_bytes(good + b"{broken\n{also broken\n")
    project.run("r", "--incoming")
    assert len(project.tasks("--status", "rejected")) == 3
