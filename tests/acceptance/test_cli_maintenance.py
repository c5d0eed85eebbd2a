"""A maintenance window through the real CLI: while it covers now, ``crossdock run ROUTE --outgoing`` sends nothing,
says why, and leaves every task's status and attempts as they were; imports go on unless ``imports: false``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

TRANSIENT_SKU = "SKU-000001"


def window_yaml(*, imports: bool = True) -> str:
    now = datetime.now(UTC)
    # a naive timestamp is UTC; the other end says so explicitly
    start = (now - timedelta(hours=1)).replace(tzinfo=None, microsecond=0).isoformat()
    end = (now + timedelta(hours=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    # a daily window half a day away: never touching the one above, whatever the time the suite runs
    far = (now.hour + 12) % 24
    return (
        "    maintenance:\n"
        f"      - {{from: '{start}', to: '{end}'{'' if imports else ', imports: false'}}}\n"
        f"      - {{cron: '0 {far} * * *', duration: 1h}}\n"
    )


def attempts(project: Any) -> dict[str, tuple[str, int]]:
    return {t["identifier"]: (t["status"], t["attempts"]) for t in project.tasks()}


def test_a_window_covering_now_sends_nothing_says_why_and_spends_no_attempt(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(status_for_skus={TRANSIENT_SKU: 503})
    retry = "    retry: {max_attempts: 5, backoff: 1ms, jitter: 0}\n"
    project.write_ndjson("data/in.ndjson", project.products(5))
    project.write_config(project.route_yaml(extra=retry))
    first = project.run("r")
    assert (first["by_status"]["finished"], first["by_status"]["retry"]) == (4, 1), first
    assert shop.stats()["requests"] == 5
    shop.set_failures()

    # more records arrive, and a window now covers the route
    project.write_ndjson("data/in.ndjson", project.products(8))
    project.write_config(project.route_yaml(extra=retry + window_yaml()))
    before = attempts(project)
    imported = project.run("r")
    assert imported["incoming"]["held"] is None and imported["incoming"]["routes"]["r"]["new"] == 3, "imports go on"
    assert imported["outgoing"]["claimed"] == 0
    assert shop.stats()["requests"] == 5
    before = attempts(project)
    assert sorted(before.values()) == [("finished", 1)] * 4 + [("new", 0)] * 3 + [("retry", 1)]

    shown = project.cli("run", "r", "--outgoing")
    assert "route r in maintenance until " in shown.stdout, shown
    assert "nothing sent; the due tasks stay new or retry with their attempts" in shown.stdout, shown
    held = project.run("r", "--outgoing")["outgoing"]
    assert held["claimed"] == 0 and held["by_status"] == {} and held["released"] == 0, held
    until = datetime.fromisoformat(held["held_until"].replace("Z", "+00:00"))
    assert held["held"] == f"in maintenance until {until.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    assert timedelta(minutes=55) < until - datetime.now(UTC) <= timedelta(hours=1)
    assert shop.stats()["requests"] == 5, "the target saw nothing"
    assert attempts(project) == before, "no status and no attempt changed"

    [route] = project.cli("routes", "list", "--json").json
    assert route["maintenance_until"] == held["held_until"] and route["imports_stopped_until"] is None
    listing = project.cli("routes", "list").stdout
    assert "maintenance until " in listing.splitlines()[1], listing

    # the window is over (taken out of the config): everything due goes out
    project.write_config(project.route_yaml(extra=retry))
    after = project.run("r", "--outgoing")
    assert after["outgoing"]["held"] is None
    assert after["by_status"]["finished"] == 8, after
    assert shop.stats()["requests"] == 9


def test_imports_false_stops_reading_the_source_too(project: Any, shop_factory: Any) -> None:
    shop = shop_factory()
    project.write_ndjson("data/in.ndjson", project.products(3))
    project.write_config(project.route_yaml(extra=window_yaml(imports=False)))
    result = project.cli("run", "r")
    assert "the source was not read" in result.stdout and "in maintenance until" in result.stdout, result
    data = project.run("r")
    assert data["incoming"]["read"] == 0 and data["incoming"]["held"].endswith("(imports: false)"), data
    assert sum(data["by_status"].values()) == 0
    assert shop.stats()["requests"] == 0
    [route] = project.cli("routes", "list", "--json").json
    assert route["imports_stopped_until"] == route["maintenance_until"] is not None
