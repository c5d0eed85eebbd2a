"""``crossdock routes list|activate|deactivate``: which routes run, and why one crossdock paused.

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
    """Every configured route: active or not (and who decided), why crossdock paused it, its task counts."""
    with guarded():
        project = load(config)
        with opened_store(config, db, project=project) as store:
            states = store.route_states()
            stats = store.stats()
    rows: list[dict[str, Any]] = []
    for name, route in project.routes.items():
        state = states.get(name)
        counts = stats.by_route.get(name, {})
        rows.append(
            {
                "name": name,
                "active": effective_active(route, states),
                "active_in_config": route.config.active,
                "overridden": state is not None and state.active is not None,
                "paused_reason": state.paused_reason if state is not None else None,
                "paused_at": iso(state.paused_at) if state is not None else None,
                "priority": route.config.priority,
                "due": counts.get("new", 0) + counts.get("retry", 0),
                "failed": counts.get("failed", 0),
            }
        )
    if json_out:
        emit_json(rows)
        return
    print_rows(
        ("route", "active", "priority", "due", "failed", "note"),
        [
            (
                r["name"],
                "yes" if r["active"] else "no",
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
