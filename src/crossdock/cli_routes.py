"""``crossdock routes list|activate|deactivate``: which routes run, why one crossdock paused, and which are held by
a maintenance window or an open circuit breaker.

Activation is stored in the database, as the dashboard's and the API's switch is, and wins over the config's
``active:``; activating a route that ``pause_after`` paused clears the pause.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from crossdock.cli_base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    WideOpt,
    cli_actor,
    emit_json,
    guarded,
    load,
    opened_store,
    out,
    print_rows,
)
from crossdock.engine.delivery_gate import circuit_rows
from crossdock.engine.maintenance import imports_stopped_until, maintenance_until, when
from crossdock.engine.project import effective_active
from crossdock.errors import UsageError
from crossdock.tasks import iso

routes_app = typer.Typer(help="Routes: which run, switch them on or off.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The route's name in crossdock.yaml.")]


def register(app: typer.Typer) -> None:
    app.add_typer(routes_app, name="routes")


@routes_app.command("list")
def routes_list(
    wide: WideOpt = False, config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False
) -> None:
    """Every configured route: active or not (and who decided), why crossdock paused it, whether a maintenance window
    or an open circuit breaker holds its deliveries, its task counts."""
    with guarded():
        project = load(config)
        with opened_store(config, db, project=project) as store:
            states = store.route_states()
            stats = store.stats()
            circuits = {c["key"]: c for c in circuit_rows(project, store)}
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, route in project.routes.items():
        state = states.get(name)
        counts = stats.by_route.get(name, {})
        window_end = maintenance_until(route.maintenance, now)
        imports_end = imports_stopped_until((*route.config.maintenance, *route.incoming.maintenance), now)
        rows.append(
            {
                "name": name,
                "active": effective_active(route, states),
                "active_in_config": route.config.active,
                "overridden": state is not None and state.active is not None,
                "paused_reason": state.paused_reason if state is not None else None,
                "paused_at": iso(state.paused_at) if state is not None else None,
                "maintenance_until": iso(window_end),
                "imports_stopped_until": iso(imports_end),
                "circuit": circuits.get(route.circuit_key) if route.circuit is not None else None,
                "priority": route.config.priority,
                "due": counts.get("new", 0) + counts.get("retry", 0),
                "failed": counts.get("failed", 0),
            }
        )
    if json_out:
        emit_json(rows)
        return
    print_rows(
        ("route", "active", "state", "priority", "due", "failed", "note"),
        [
            (
                r["name"],
                "yes" if r["active"] else "no",
                _state(r),
                r["priority"],
                f"{r['due']:,}",
                f"{r['failed']:,}",
                r["paused_reason"] or ("switched in the database" if r["overridden"] else ""),
            )
            for r in rows
        ],
        wide=wide,
        empty="no route is configured",
        styles={"active": lambda v: f"[green]{v}[/]" if v == "yes" else f"[red]{v}[/]"},
    )


def _state(row: dict[str, Any]) -> str:
    """What holds the route's deliveries, if anything: the state column of ``routes list``."""
    held = []
    if not row["active"]:
        held.append("paused" if row["paused_reason"] else "inactive")
    if row["maintenance_until"]:
        imports = " (imports too)" if row["imports_stopped_until"] else ""
        held.append(f"maintenance until {when(_parsed(row['maintenance_until']))}{imports}")
    circuit = row["circuit"]
    if circuit is not None and circuit["state"] == "open":
        until = f" until {when(_parsed(circuit['until']))}" if circuit["until"] else ""
        held.append(f"circuit {circuit['key']} open{until}")
    elif circuit is not None and circuit["state"] == "half_open":
        held.append(f"circuit {circuit['key']} half-open (probing)")
    return "; ".join(held) or "ok"


def _parsed(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _switch(name: str, active: bool, config: Any, db: str | None, json_out: bool) -> None:
    with guarded():
        project = load(config)
        if name not in project.routes:
            raise UsageError(f"no route named {name!r} in {config} (routes: {', '.join(sorted(project.routes))})")
        now = datetime.now(UTC)
        with opened_store(config, db, project=project) as store:
            store.set_route_active(name, active, now=now)
            store.record_audit(
                cli_actor(), "route.activate" if active else "route.deactivate", {"route": name}, now=now
            )
    if json_out:
        emit_json({"name": name, "active": active})
    else:
        out.print(f"route {name} is {'active' if active else 'inactive'} (stored in the database)", markup=False)


@routes_app.command("activate")
def routes_activate(
    name: NameArg, config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False
) -> None:
    """Switch a route on; this clears a pause by ``pause_after``."""
    _switch(name, True, config, db, json_out)


@routes_app.command("deactivate")
def routes_deactivate(
    name: NameArg, config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False
) -> None:
    """Switch a route off: nothing is imported or delivered for it until it is activated again."""
    _switch(name, False, config, db, json_out)
