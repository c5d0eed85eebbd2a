"""Maintenance windows: the time arithmetic (cron + duration, from/to, merged overlapping windows), what the config
accepts and how it says what is wrong, and the holds the engine derives from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crossdock.config import MaintenanceWindow
from crossdock.engine.delivery_gate import import_hold, maintenance_hold
from crossdock.engine.maintenance import (
    HORIZON,
    MAX_CHAIN,
    imports_stopped_until,
    maintenance_until,
    occurrence_end,
    window_until,
)
from crossdock.engine.project import Project, load_project
from crossdock.errors import ConfigErrors

#: a Thursday
DAY = datetime(2026, 12, 3, tzinfo=UTC)


def t(hour: int, minute: int = 0, second: float = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def window(**data: Any) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(data)


NIGHTLY = window(cron="0 2 * * *", duration="2h")


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (t(1, 59, 59), None),
        (t(2), t(4)),  # the start belongs to the window
        (t(3, 30), t(4)),
        (t(3, 59, 59.9), t(4)),
        (t(4), None),  # the end does not
        (t(12), None),
    ],
)
def test_a_cron_window_covers_each_fire_for_its_duration(now: datetime, until: datetime | None) -> None:
    assert maintenance_until([NIGHTLY], now) == until


def test_a_cron_window_reaching_past_midnight_covers_the_next_morning() -> None:
    late = window(cron="0 23 * * *", duration="3h")
    assert maintenance_until([late], t(25)) == t(26)
    assert maintenance_until([late], t(22, 59)) is None


def test_a_six_field_cron_fires_on_seconds() -> None:
    every_ten = window(cron="* * * * * */10", duration="5s")
    assert maintenance_until([every_ten], t(8, 0, 12)) == t(8, 0, 15)
    assert maintenance_until([every_ten], t(8, 0, 17)) is None


def test_a_one_off_window_is_from_inclusive_to_exclusive() -> None:
    once = window(**{"from": "2026-12-03T10:00:00Z", "to": "2026-12-03T11:30:00+00:00"})
    assert maintenance_until([once], t(9, 59)) is None
    assert maintenance_until([once], t(10)) == t(11, 30)
    assert maintenance_until([once], t(11, 30)) is None


def test_overlapping_and_touching_windows_merge_into_one_until() -> None:
    nightly = NIGHTLY  # 02:00-04:00
    overlap = window(**{"from": "2026-12-03T03:00:00Z", "to": "2026-12-03T05:00:00Z"})
    touching = window(**{"from": "2026-12-03T05:00:00Z", "to": "2026-12-03T05:30:00Z"})
    apart = window(**{"from": "2026-12-03T05:31:00Z", "to": "2026-12-03T07:00:00Z"})
    windows = [apart, touching, overlap, nightly]
    assert maintenance_until(windows, t(2, 30)) == t(5, 30), "04:00 is not the truth: the windows run on"
    assert maintenance_until(windows, t(4, 45)) == t(5, 30)
    assert maintenance_until(windows, t(5, 30, 30)) is None, "the gap is a gap"
    assert maintenance_until(windows, t(6)) == t(7)


def test_a_cron_whose_occurrences_overlap_ends_after_the_last_of_the_chain() -> None:
    # every hour for 90 minutes between 01:00 and 03:00: covered from 01:00 to 04:30 without a break
    chained = window(cron="0 1-3 * * *", duration="90m")
    assert occurrence_end(chained, t(2, 15)) == t(3, 30)
    assert maintenance_until([chained], t(1, 10)) == t(4, 30)


def test_windows_that_never_end_are_followed_only_so_far() -> None:
    forever = window(cron="* * * * *", duration="2m")
    until = window_until([forever], t(0))
    assert until is not None and until - t(0) >= timedelta(minutes=MAX_CHAIN), "at least that long, found quickly"
    week = window(cron="0 0 * * *", duration="25h")
    assert window_until([week], t(0)) == t(0) + HORIZON + timedelta(hours=1), "the first end past the horizon"


def test_only_windows_with_imports_false_stop_imports() -> None:
    deliveries_only = NIGHTLY
    both = window(cron="0 3 * * *", duration="30m", imports=False)
    assert maintenance_until([deliveries_only, both], t(3, 10)) == t(4)
    assert imports_stopped_until([deliveries_only, both], t(2, 30)) is None
    assert imports_stopped_until([deliveries_only, both], t(3, 10)) == t(3, 30)


# --- config ---------------------------------------------------------------------------------------


def project(tmp_path: Path, yaml: str) -> Project:
    (tmp_path / "in.ndjson").write_text("")
    (tmp_path / "crossdock.yaml").write_text(yaml)
    return load_project(tmp_path / "crossdock.yaml")


ROUTE = """\
routes:
  r:
    incoming: {source: {type: file, path: in.ndjson}}
    identifier: sku
    outgoing:
      target: {type: http, connection: shop, path: "/p/{sku}"}
"""
SHOP = "connections:\n  shop:\n    type: http\n    base_url: http://127.0.0.1:9\n"


def test_naive_and_yaml_timestamps_are_utc_and_a_date_is_its_midnight() -> None:
    naive = window(**{"from": "2026-12-03T10:00:00", "to": datetime(2026, 12, 3, 11)})
    assert naive.from_ == t(10) and naive.to == t(11)
    dated = window(**{"from": DAY.date(), "to": "2026-12-04"})
    assert dated.from_ == DAY and dated.to == DAY + timedelta(days=1)
    offset = window(**{"from": "2026-12-03T11:00:00+01:00", "to": "2026-12-03T12:00:00Z"})
    assert offset.from_ == t(10)


def test_a_connection_takes_circuit_and_maintenance_without_its_type_seeing_them(tmp_path: Path) -> None:
    loaded = project(
        tmp_path,
        SHOP
        + "    circuit: {failures: 5, cooldown: 30s}\n"
        + "    maintenance:\n      - {cron: '0 2 * * *', duration: 2h}\n"
        + ROUTE
        + "    maintenance:\n      - {from: 2026-12-03T10:00:00Z, to: 2026-12-03T11:00:00Z, imports: false}\n",
    )
    route = loaded.routes["r"]
    assert route.circuit is not None and (route.circuit.failures, route.circuit.cooldown) == (5, 30.0)
    assert route.circuit_key == "shop", "routes to a connection share its breaker"
    assert maintenance_until(route.maintenance, t(2, 30)) == t(4), "the connection's window holds the route"
    assert maintenance_until(route.maintenance, t(10, 30)) == t(11)
    assert not hasattr(loaded.connections["shop"], "circuit")


def test_the_route_circuit_wins_and_a_target_without_a_connection_keys_by_route(tmp_path: Path) -> None:
    loaded = project(
        tmp_path,
        SHOP + "    circuit: {failures: 5}\n" + ROUTE + "      circuit: {failures: 2, cooldown: 1m}\n",
    )
    route = loaded.routes["r"]
    assert route.circuit is not None and (route.circuit.failures, route.circuit.cooldown, route.circuit_key) == (
        2,
        60.0,
        "shop",
    )
    alone = project(
        tmp_path,
        ROUTE.replace('{type: http, connection: shop, path: "/p/{sku}"}', "{type: noop}")
        + "      circuit: {failures: 2}\n",
    )
    assert alone.routes["r"].circuit_key == "r"
    plain = project(tmp_path, SHOP + ROUTE)
    assert plain.routes["r"].circuit is None


WINDOW = "    maintenance:\n      - "
BAD = [
    (SHOP + "    circuit: {failures: 0}\n" + ROUTE, "connections.shop.circuit.failures", "greater than or equal to 1"),
    (SHOP + "    circuit: {failures: 3, cooldown: 0s}\n" + ROUTE, "connections.shop.circuit.cooldown", "than zero"),
    (SHOP + "    circuit: {failures: 3, colldown: 1m}\n" + ROUTE, "connections.shop.circuit.colldown", "unknown key"),
    (SHOP + ROUTE + "      circuit: {cooldown: 1m}\n", "routes.r.outgoing.circuit.failures", "required key is missing"),
    (SHOP + ROUTE + WINDOW + "{cron: '0 25 * * *', duration: 1h}\n", "routes.r.maintenance[0].cron", "not a valid"),
    (SHOP + ROUTE + WINDOW + "{cron: '0 2 * * *', duration: 0}\n", "routes.r.maintenance[0].duration", "than zero"),
    (SHOP + ROUTE + WINDOW + "{cron: '0 2 * * *'}\n", "routes.r.maintenance[0]", "needs both cron: and duration:"),
    (SHOP + ROUTE + WINDOW + "{from: soon, to: later}\n", "routes.r.maintenance[0].from", "not an ISO timestamp"),
    (SHOP + ROUTE + WINDOW + "{from: 2026-12-03T10:00:00Z, to: 2026-12-03T09:00:00Z}\n", "routes.r.maintenance[0]",
     "must be after from"),
    (SHOP + ROUTE + WINDOW + "{from: 2026-12-03T10:00:00Z}\n", "routes.r.maintenance[0]", "needs both from: and to:"),
    (SHOP + ROUTE + WINDOW + "{duration: 1h, to: 2026-12-03T09:00:00Z}\n", "routes.r.maintenance[0]", "give either"),
    (SHOP + "    maintenance: {cron: '0 2 * * *'}\n" + ROUTE, "connections.shop.maintenance", "valid list"),
]  # fmt: skip


@pytest.mark.parametrize(("yaml", "key", "message"), BAD)
def test_bad_gates_name_the_key_and_say_what_to_write(tmp_path: Path, yaml: str, key: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        project(tmp_path, yaml)
    found = [e for e in caught.value.errors if e.key == key]
    assert found, [str(e) for e in caught.value.errors]
    assert message in found[0].message, str(found[0])
    assert found[0].line is not None


# --- holds ----------------------------------------------------------------------------------------


def test_holds_say_why_and_until_when(tmp_path: Path) -> None:
    loaded = project(
        tmp_path,
        SHOP
        + "    maintenance:\n      - {cron: '0 2 * * *', duration: 2h}\n"
        + ROUTE
        + "    maintenance:\n      - {cron: '30 3 * * *', duration: 1h}\n",
    )
    route = loaded.routes["r"]
    hold = maintenance_hold(route, t(2, 10))
    assert hold is not None and hold.kind == "maintenance"
    assert (hold.until, hold.reason) == (t(4, 30), "in maintenance until 2026-12-03 04:30:00 UTC")
    assert maintenance_hold(route, t(5)) is None
    assert import_hold(loaded, route.incoming, ["r"], t(2, 10)) is None, "imports go on by default"


SHARED = """\
connections:
  erp:
    type: http
    base_url: http://127.0.0.1:9
    maintenance:
      - {cron: '0 1 * * *', duration: 1h, imports: false}
incomings:
  products:
    source: {type: http, connection: erp, path: /products}
routes:
  a:
    incoming: products
    identifier: sku
    outgoing: {target: {type: noop}}
    maintenance:
      - {cron: '0 3 * * *', duration: 1h, imports: false}
  b:
    incoming: products
    identifier: sku
    outgoing: {target: {type: noop}}
    maintenance:
      - {cron: '30 3 * * *', duration: 1h, imports: false}
"""


def test_a_shared_incoming_stops_only_when_its_source_or_every_route_stops_importing(tmp_path: Path) -> None:
    loaded = project(tmp_path, SHARED)
    incoming = loaded.incomings["products"]
    source = import_hold(loaded, incoming, ["a", "b"], t(1, 20))
    assert source is not None and source.until == t(2) and "imports: false" in source.reason
    assert import_hold(loaded, incoming, ["a", "b"], t(3, 10)) is None, "b still imports: nothing is dropped for it"
    both = import_hold(loaded, incoming, ["a", "b"], t(3, 40))
    assert both is not None and both.until == t(4), "read again as soon as one route imports"
    assert import_hold(loaded, incoming, ["a"], t(3, 10)) is not None, "b inactive: a alone decides"
    assert maintenance_hold(loaded.routes["a"], t(1, 20)) is None, "the source's window does not hold deliveries"
