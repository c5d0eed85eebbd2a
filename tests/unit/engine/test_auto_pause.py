"""pause_after: the ledger's settle events switch a failing route off, once, with the reason, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from crossdock.engine.auto_pause import AutoPause
from crossdock.engine.project import Project, load_project
from crossdock.store import Settlement
from crossdock.store.base import ImportItem, ImportOptions
from crossdock.store.events import LedgerEvent, RoutePaused
from crossdock.store.memory import MemoryStore
from crossdock.tasks import Action, Status


def now() -> datetime:
    """The real time: the ratio rule reads the throughput of the last minutes."""
    return datetime.now(UTC)


def project_with(tmp_path: Path, pause_after: str) -> Project:
    (tmp_path / "in.ndjson").write_text("")
    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        f"    outgoing: {{target: {{type: noop}}}}\n    pause_after: {pause_after}\n"
    )
    return load_project(tmp_path / "crossdock.yaml")


def deliver(store: MemoryStore, outcomes: list[Action]) -> None:
    """One task per outcome, claimed and settled in this order."""
    items = [
        ImportItem(Status.NEW, f"k{i}-{len(store.tasks)}", orjson.dumps({"i": i}), fingerprint=bytes(16))
        for i in range(len(outcomes))
    ]
    at = now()
    store.import_batch("r", items, run_id=None, options=ImportOptions(delta=False), now=at)
    claimed = store.claim_due_tasks("r", len(outcomes), worker="w", lease_until=at + timedelta(minutes=5), now=at)
    for task, action in zip(claimed, outcomes, strict=True):
        store.settle(
            [Settlement(task.id, action, "w", error="422" if action is Action.DELIVERY_FAILED else None)], now=at
        )


def test_consecutive_failures_pause_the_route_once_with_the_reason(tmp_path: Path) -> None:
    project = project_with(tmp_path, "{failed: 3}")
    store = MemoryStore()
    pauser = AutoPause.attach(project, store)
    assert AutoPause.attach(project, store) is pauser, "one per store"
    heard: list[LedgerEvent] = []
    store.events.subscribe(heard.append)
    # a success in between starts the count again
    deliver(store, [Action.DELIVERY_FAILED, Action.DELIVERY_FAILED, Action.DELIVERED, Action.DELIVERY_FAILED])
    assert store.route_states().get("r") is None
    deliver(store, [Action.DELIVERY_FAILED, Action.DELIVERY_FAILED, Action.DELIVERY_FAILED])
    state = store.route_states()["r"]
    assert state.active is False and state.paused_at is not None
    assert state.paused_reason is not None and state.paused_reason.startswith("paused after 3 consecutive failed tasks")
    assert [e.route for e in heard if isinstance(e, RoutePaused)] == ["r"]
    [audit] = store.list_audit()
    assert (audit.actor, audit.action, audit.target) == ("auto-pause", "route.pause", {"route": "r"})
    # a person activates it: the reason is cleared and the count starts again
    store.set_route_active("r", True, now=now())
    assert pauser.still_paused(project.routes["r"]) is False
    assert store.route_states()["r"].paused_reason is None
    deliver(store, [Action.DELIVERY_FAILED, Action.DELIVERY_FAILED])
    assert store.route_states()["r"].active is True


def test_a_failure_ratio_within_a_period_pauses_the_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crossdock.engine.auto_pause as module

    monkeypatch.setattr(module, "RATIO_CHECK_EVERY", 0.0)
    project = project_with(tmp_path, "{failed_ratio: 0.5, within: 10m, min_tasks: 6}")
    store = MemoryStore()
    AutoPause.attach(project, store)
    deliver(store, [Action.DELIVERY_FAILED, Action.DELIVERED, Action.DELIVERY_FAILED, Action.DELIVERED])
    assert store.route_states().get("r") is None, "fewer than min_tasks settled"
    deliver(store, [Action.DELIVERY_FAILED, Action.DELIVERED])
    reason = store.route_states()["r"].paused_reason
    assert reason is not None and reason.startswith("paused after 3 of 6 tasks failed within 10m")


def test_pause_after_needs_a_rule(tmp_path: Path) -> None:
    from crossdock.errors import ConfigErrors

    with pytest.raises(ConfigErrors, match="failed_ratio"):
        project_with(tmp_path, "{within: 10m}")


def test_a_project_without_pause_after_adds_nothing_to_the_settle_path(tmp_path: Path) -> None:
    watched = project_with(tmp_path, "{failed: 3}")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "in.ndjson").write_text("")
    (tmp_path / "plain" / "crossdock.yaml").write_text(
        "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
        "    outgoing: {target: {type: noop}}\n"
    )
    plain = load_project(tmp_path / "plain" / "crossdock.yaml")
    store = MemoryStore()
    pauser = AutoPause.attach(plain, store)
    assert store.events.subscribers == []
    assert AutoPause.attach(watched, store) is pauser and store.events.subscribers == [pauser.on_event]
    AutoPause.attach(plain, store)
    assert store.events.subscribers == []
