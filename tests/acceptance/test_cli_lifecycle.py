"""The task lifecycle through the CLI: retries, permanent failures, waiting, manual actions, crashed workers,
Retry-After, pruning."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from typing import Any

from crossdock.mock import RunningShop

ALL_STATUSES = ["new", "processing", "finished", "failed", "skipped", "rejected", "waiting", "retry"]


def counts(**nonzero: int) -> dict[str, int]:
    return {s: nonzero.get(s, 0) for s in ALL_STATUSES}


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def exports(shown: dict[str, Any]) -> list[dict[str, Any]]:
    return [ln for ln in shown["logs"] if ln["phase"] == "export"]


def run_outgoing_until_settled(project: Any, route: str, rounds: int = 6) -> dict[str, Any]:
    """Run the outgoing until nothing is left in new/retry/processing (tiny backoffs make that quick)."""
    for _ in range(rounds):
        stats = project.stats()
        open_ = sum(stats["by_status"][s] for s in ("new", "retry", "processing"))
        if not open_:
            return stats
        project.run(route, "--outgoing", expect=None)
        time.sleep(0.05)
    return dict(project.stats())


# --- 1. transient errors are retried; attempts run out ----------------------------------------------------------


def test_503_twice_then_200_finishes_on_the_third_attempt(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(fail_times=2, fail_status=503)
    project.write_ndjson("data/in.ndjson", project.products(5))
    project.write_config(project.route_yaml(extra="    retry: {max_attempts: 5, backoff: 0s}\n"))
    project.run("r", expect=None)
    stats = run_outgoing_until_settled(project, "r")
    assert stats["by_status"] == counts(finished=5)
    for task in project.tasks():
        assert task["attempts"] == 3, task
        assert task["error"] is None
        lines = exports(project.show(task["id"]))
        assert len(lines) == 3, lines
        assert [ln["details"].get("status") for ln in lines] == [503, 503, 201]
        assert [ln["to"] for ln in lines] == ["retry", "retry", "finished"]
    assert shop.stats()["by_status"] == {"201": 5, "503": 10}
    assert shop.duplicates() == {}


def test_always_503_fails_after_max_attempts_with_every_attempt_logged(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(always_status=503)
    records = project.products(3)
    project.write_ndjson("data/in.ndjson", records)
    project.write_config(project.route_yaml(extra="    retry: {max_attempts: 3, backoff: 0s}\n"))
    project.run("r", expect=None)
    stats = run_outgoing_until_settled(project, "r")
    assert stats["by_status"] == counts(failed=3)
    assert shop.stats()["requests"] == 9
    by_sku = {r["sku"]: r for r in records}
    for task in project.tasks():
        assert task["status"] == "failed"
        assert task["attempts"] == 3
        assert "503" in task["error"]
        shown = project.show(task["id"])
        assert shown["entity"] == by_sku[task["identifier"]]
        lines = exports(shown)
        assert len(lines) == 3, lines
        assert all(ln["details"]["status"] == 503 for ln in lines)
        assert [ln["to"] for ln in lines] == ["retry", "retry", "failed"]
        assert "attempt 1" in lines[0]["message"] and "attempt 3" in lines[2]["message"]


# --- 2. a permanent error is not retried -------------------------------------------------------------------------


def test_400_fails_at_once_without_retry(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(always_status=400)
    project.write_ndjson("data/in.ndjson", project.products(2))
    project.write_config(project.route_yaml(extra="    retry: {max_attempts: 5, backoff: 0s}\n"))
    run = project.run("r")
    assert run["by_status"] == counts(failed=2)
    project.run("r", "--outgoing")
    assert shop.stats()["requests"] == 2
    for task in project.tasks():
        assert task["attempts"] == 1
        assert task["next_attempt_at"] is None or task["status"] == "failed"
        lines = exports(project.show(task["id"]))
        assert len(lines) == 1 and lines[0]["details"]["status"] == 400


# --- 3. waiting routes and bulk finish ----------------------------------------------------------------------------


def test_waiting_route_and_bulk_finish(project: Any, shop: RunningShop) -> None:
    project.write_ndjson("data/in.ndjson", project.products(7))
    project.write_config(project.route_yaml("w", extra="    waiting: true\n"))
    run = project.run("w")
    assert run["by_status"] == counts(waiting=7)
    assert shop.stats()["accepted"] == 7
    result = project.cli("tasks", "finish", "--status", "waiting", "--route", "w", "--json").json
    assert result["matched"] == 7 and result["changed"] == 7
    assert project.stats()["by_status"] == counts(finished=7)
    # again: nothing is waiting any more
    again = project.cli("tasks", "finish", "--status", "waiting", "--route", "w", "--json", expect=None).json
    assert again["matched"] == 0 and again["changed"] == 0
    plain = project.cli("tasks", "fail", "--status", "waiting", "--route", "w", expect=None)
    assert "matched 0" in plain.stdout
    shown = project.show(project.tasks()[0]["id"])
    assert shown["logs"][-1]["to"] == "finished" and shown["logs"][-1]["from"] == "waiting"


# --- 4. a refused manual action names the allowed transitions ----------------------------------------------------


def test_retry_of_a_new_task_is_refused_naming_the_allowed_transitions(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(1))
    project.write_config(project.route_yaml(connections=False, target="{type: noop}"))
    project.run("r", "--incoming")
    [task] = project.tasks()
    assert task["status"] == "new"
    result = project.cli("tasks", "retry", str(task["id"]), expect=None)
    assert result.code != 0, result
    text = result.stdout + result.stderr
    assert "new" in text
    assert "skip" in text and "skipped" in text, text  # the one manual action allowed from new
    assert project.tasks()[0]["status"] == "new"
    # an unknown id is an error too
    assert project.cli("tasks", "retry", "424242", expect=None).code != 0


# --- 5. a killed exporter's tasks come back after the lease -----------------------------------------------------


def test_sigkill_during_export_is_recovered_after_the_lease(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(slow_ms=400)
    n = 60
    project.write_ndjson("data/in.ndjson", project.products(n))
    project.write_config(
        project.route_yaml(outgoing_extra="      lease: 2s\n      concurrency: 8\n"),
    )
    project.run("r", "--incoming")
    proc = project.popen("run", "r", "--outgoing")
    try:
        saw = project.wait_for(lambda: project.stats()["by_status"]["processing"] > 0, timeout=20, interval=0.05)
        assert saw, "no task reached processing"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    before = project.stats()["by_status"]
    assert before["processing"] > 0, before
    assert before["finished"] < n
    killed_at = time.monotonic()
    # the lease has not expired yet: nothing can be taken back
    time.sleep(max(0.0, 2.3 - (time.monotonic() - killed_at)))
    shop.set_failures()  # fast again
    run = project.run("r", "--outgoing")
    assert run["outgoing"]["recovered_leases"] == before["processing"], run
    stats = run_outgoing_until_settled(project, "r")
    assert stats["by_status"] == counts(finished=n)
    project.cli("stats", "--verify")
    # every sku arrived at least once; at-least-once delivery
    assert len(shop.by_sku) == n
    recovered = [t for t in project.tasks() if t["attempts"] == 2]
    assert len(recovered) == before["processing"]
    logs = project.show(recovered[0]["id"])["logs"]
    assert any("lease" in ln["message"] and ln["to"] == "new" for ln in logs), logs


# --- 6. 429 with Retry-After -----------------------------------------------------------------------------------


def test_429_retry_after_sets_next_attempt(project: Any, shop_factory: Any) -> None:
    shop_factory(always_status=429, retry_after=40)
    project.write_ndjson("data/in.ndjson", project.products(2))
    project.write_config(project.route_yaml(extra="    retry: {max_attempts: 5, backoff: 0s}\n"))
    before = datetime.now(UTC)
    run = project.run("r")
    after = datetime.now(UTC)
    assert run["by_status"] == counts(retry=2)
    for task in project.tasks():
        assert task["attempts"] == 1
        at = parse(task["next_attempt_at"])
        assert (at - before).total_seconds() >= 39, (before, at)
        assert (at - after).total_seconds() <= 41, (after, at)
        lines = exports(project.show(task["id"]))
        assert lines[-1]["details"]["status"] == 429
    # not due yet: another outgoing pass sends nothing
    again = project.run("r", "--outgoing")
    assert again["outgoing"]["claimed"] == 0


# --- 7. prune keeps the latest task per identifier ---------------------------------------------------------------


def test_prune_finished_keeps_the_latest_per_identifier(project: Any) -> None:
    records = project.products(10)
    project.write_ndjson("data/in.ndjson", records)
    project.write_config(project.route_yaml(connections=False, target="{type: noop}"))
    project.run("r")
    changed = [{**r, "title": r["title"] + " v2"} for r in records[:4]] + records[4:]
    project.write_ndjson("data/in.ndjson", changed)
    project.run("r")
    # 10 finished v1 + 4 finished v2 + 6 skipped (unchanged since their finished task)
    assert project.stats()["by_status"] == counts(finished=14, skipped=6)
    time.sleep(0.02)
    pruned = project.cli("prune", "--older-than", "0s", "--status", "finished", "--json").json
    # the 4 superseded-by-newer finished v1 tasks go; the 6 unchanged ones' v1 tasks are
    # no longer the latest either (their skipped task is), so they go too
    assert pruned == {"deleted": 10}
    stats = project.stats()
    assert stats["by_status"] == counts(finished=4, skipped=6)
    project.cli("stats", "--verify")
    left = project.tasks()
    assert sorted(t["identifier"] for t in left) == sorted(r["sku"] for r in records)
    # delta still works after pruning: nothing new on the next import
    project.run("r", "--incoming")
    assert project.stats()["by_status"]["new"] == 0
