"""The alert rules over every backend: one message per route and digest window, counted from what the store
holds, never repeated by a later check, and a ``recovered`` message once the problem is over."""

from __future__ import annotations

from typing import Any

import pytest
from store_helpers import ROUTE, T0, at, claim, imp, item, settle

from crossdock.alerts.messages import Links
from crossdock.alerts.rules import Found, Rules
from crossdock.config.models import AlertsConfig
from crossdock.store.base import Store
from crossdock.tasks import Action

CHANNELS = {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}


def rules(store: Store, *rule_list: dict[str, Any], routes: tuple[str, ...] = (ROUTE, "other")) -> Rules:
    config = AlertsConfig.model_validate({"channels": CHANNELS, "rules": list(rule_list)})
    return Rules(config, store, routes, Links("http://dash.example"), lambda text: text.replace("s3cret", "***"))


def check(r: Rules, seconds: float) -> list[Found]:
    """One check, saving states like the alerter does (in the transaction of its messages)."""
    found, states = r.check(at(seconds))
    r.store.add_alerts([], now=at(seconds), states=states)
    return found


def fail_some(store: Store, n: int, seconds: float, error: str = "HTTP 422: price missing", route: str = ROUTE) -> None:
    imp(store, [item(f"{route}-{seconds}-{i}") for i in range(n)], now=at(seconds), route=route)
    for t in claim(store, n, now=at(seconds), route=route):
        settle(store, t.id, Action.DELIVERY_FAILED, now=at(seconds), error=error)


def test_failures_of_one_window_make_one_message_with_count_and_top_errors(store: Store) -> None:
    r = rules(store, {"name": "failures", "event": "task_failed", "digest": "1m", "channels": ["ops"]})
    assert check(r, 0) == []  # the first check starts looking from now: history is not alerted
    fail_some(store, 20, 10)
    fail_some(store, 9, 30, error="HTTP 422: sku s3cret unknown")
    fail_some(store, 1, 40, error="HTTP 500")
    assert check(r, 50) == []  # the window opened at 10 s and lasts a minute
    [found] = check(r, 76)
    alert = found.alert
    assert (alert.event, alert.route, alert.count, alert.rule) == ("task_failed", ROUTE, 30, "failures")
    assert alert.title == "30 tasks failed on route products"
    assert [(e["error"], e["count"]) for e in alert.top_errors] == [
        ("HTTP 422: price missing", 20),
        ("HTTP 422: sku *** unknown", 9),
        ("HTTP 500", 1),
    ]
    assert alert.top_errors[0]["url"].startswith("http://dash.example/tasks/")
    assert alert.url == "http://dash.example/tasks?route=products&status=failed"
    assert alert.window == (at(10), at(70))
    assert check(r, 80) == [] and check(r, 400) == []


def test_failures_after_the_window_start_a_new_one(store: Store) -> None:
    r = rules(store, {"event": "task_failed", "digest": "1m", "channels": ["ops"]})
    check(r, 0)
    fail_some(store, 3, 10)
    fail_some(store, 2, 75)  # after the first window (10 s .. 70 s)
    [first] = check(r, 90)
    assert first.alert.count == 3
    assert check(r, 100) == []
    [second] = check(r, 140)
    assert second.alert.count == 2 and second.alert.window == (at(75), at(135))


def test_a_rule_covers_its_routes_only_and_each_route_has_its_own_window(store: Store) -> None:
    both = rules(store, {"name": "all", "event": "task_failed", "digest": 0, "channels": ["ops"]})
    only = rules(store, {"name": "one", "event": "task_failed", "routes": ["other"], "digest": 0, "channels": ["ops"]})
    check(both, 0), check(only, 0)
    fail_some(store, 2, 10)
    fail_some(store, 4, 10, route="other")
    assert sorted((f.alert.route, f.alert.count) for f in check(both, 20)) == [("other", 4), (ROUTE, 2)]
    assert [(f.alert.route, f.alert.count) for f in check(only, 20)] == [("other", 4)]


def test_min_count_keeps_a_window_with_fewer_failures_quiet(store: Store) -> None:
    r = rules(store, {"event": "task_failed", "digest": "30s", "min_count": 5, "channels": ["ops"]})
    check(r, 0)
    fail_some(store, 4, 10)
    assert check(r, 60) == []
    fail_some(store, 5, 70)
    assert [f.alert.count for f in check(r, 120)] == [5]


def test_failures_are_over_when_tasks_finish_and_none_fail_for_a_while(store: Store) -> None:
    r = rules(
        store,
        {"event": "task_failed", "digest": 0, "channels": ["ops"]},
        {"event": "recovered", "channels": ["ops"]},
    )
    check(r, 0)
    fail_some(store, 2, 10)
    assert [f.alert.event for f in check(r, 20)] == ["task_failed"]
    assert check(r, 200) == []  # quiet, but nothing finished yet
    imp(store, [item("ok")], now=at(210))
    [ok] = claim(store, 1, now=at(210))
    settle(store, ok.id, Action.DELIVERED, now=at(210))
    [recovered] = check(r, 300)
    assert (recovered.alert.event, recovered.alert.route, recovered.rule) == ("recovered", ROUTE, 1)
    assert check(r, 400) == []


def test_a_paused_route_is_reported_once_and_its_activation_as_recovered(store: Store) -> None:
    r = rules(
        store,
        {"event": "route_paused", "channels": ["ops"]},
        {"event": "recovered", "routes": [ROUTE], "channels": ["ops"]},
    )
    check(r, 0)
    store.set_route_active(ROUTE, False, now=at(10), paused_reason="paused after 10 consecutive failures")
    [paused] = check(r, 20)
    assert paused.alert.title == "Route products was paused"
    assert "paused after 10 consecutive failures" in paused.alert.lines[0]
    assert check(r, 30) == []
    store.set_route_active(ROUTE, True, now=at(40))
    [back] = check(r, 50)
    assert back.alert.event == "recovered" and "active again" in back.alert.lines[0]


def test_a_failed_run_is_reported_and_a_good_run_ends_it(store: Store) -> None:
    r = rules(
        store,
        {"event": "run_error", "digest": 0, "channels": ["ops"]},
        {"event": "recovered", "channels": ["ops"]},
    )
    check(r, 0)
    run = store.start_run(ROUTE, "incoming", actor=None, now=at(5))
    store.finish_run(run, status="failed", summary={}, error="cannot reach the ERP: connection refused", now=at(10))
    [found] = check(r, 20)
    assert found.alert.count == 1 and "connection refused" in found.alert.top_errors[0]["error"]
    good = store.start_run(ROUTE, "incoming", actor=None, now=at(30))
    store.finish_run(good, status="finished", summary={}, error=None, now=at(31))
    assert [f.alert.event for f in check(r, 40)] == ["recovered"]


@pytest.mark.parametrize("waiting_for", [30, 600])
def test_backlog_is_reported_when_the_oldest_due_task_gets_too_old(store: Store, waiting_for: int) -> None:
    r = rules(
        store,
        {"event": "backlog", "older_than": "5m", "channels": ["ops"]},
        {"event": "recovered", "channels": ["ops"]},
    )
    imp(store, [item("a"), item("b")], now=T0)
    found = check(r, waiting_for)
    if waiting_for < 300:
        assert found == []
        return
    [backlog] = found
    assert backlog.alert.event == "backlog" and "10 min" in backlog.alert.title
    assert check(r, waiting_for + 10) == []
    for t in claim(store, 10, now=at(waiting_for + 20)):
        settle(store, t.id, Action.DELIVERED, now=at(waiting_for + 20))
    assert [f.alert.event for f in check(r, waiting_for + 30)] == ["recovered"]


def test_a_new_leader_continues_where_the_last_one_stopped(store: Store) -> None:
    spec = {"name": "failures", "event": "task_failed", "digest": "1m", "channels": ["ops"]}
    first = rules(store, spec)
    check(first, 0)
    fail_some(store, 5, 10)
    assert check(first, 30) == []  # window open when this leader goes away
    second = rules(store, spec)
    assert [f.alert.count for f in check(second, 80)] == [5]
    assert check(rules(store, spec), 90) == []


def test_an_open_circuit_is_reported_with_the_routes_it_holds_and_its_closing_as_recovered(store: Store) -> None:
    config = AlertsConfig.model_validate(
        {
            "channels": CHANNELS,
            "rules": [
                {"event": "circuit_open", "routes": [ROUTE], "channels": ["ops"]},
                {"event": "recovered", "channels": ["ops"]},
            ],
        }
    )
    r = Rules(config, store, (ROUTE, "other"), Links(None), lambda t: t, {"shop": [ROUTE, "other"], "else": ["x"]})
    check(r, 0)
    store.record_circuit_failures(
        "shop", 5, threshold=5, cooldown=60, error="PUT /products/1: cannot connect", now=at(10)
    )
    store.record_circuit_failures("else", 5, threshold=5, cooldown=60, error="boom", now=at(10))
    [opened] = check(r, 20)  # "else" holds back no route of the rule
    alert = opened.alert
    assert (alert.event, alert.route) == ("circuit_open", "shop")
    assert "after 5 consecutive failures (routes products, other)" in alert.lines[0]
    assert "Last error: PUT /products/1: cannot connect" in alert.lines[1]
    assert check(r, 30) == []
    store.close_circuit("shop", now=at(40))
    [back] = check(r, 50)
    assert (back.alert.event, back.alert.route) == ("recovered", "shop")
    assert "circuit closed" in back.alert.lines[0]
