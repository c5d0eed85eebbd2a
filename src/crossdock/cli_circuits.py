"""``crossdock circuits list|close``: the circuit breakers (``circuit:`` on a connection or an outgoing), as every
process sharing the database sees them, and closing one by hand once its target is known to be back.

A breaker's key is its target's connection name (every route sending to it shares one), or the route's name when
the target names no connection.
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
    short_time,
)
from crossdock.engine.delivery_gate import circuit_rows
from crossdock.errors import UsageError

circuits_app = typer.Typer(
    help="Circuit breakers: which targets get nothing now, and closing one.", no_args_is_help=True
)

KeyArg = Annotated[str, typer.Argument(help="The breaker's key: a connection's name, or a route's (circuits list).")]


def register(app: typer.Typer) -> None:
    app.add_typer(circuits_app, name="circuits")


@circuits_app.command("list")
def circuits_list(
    wide: WideOpt = False, config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False
) -> None:
    """Every breaker: its state, consecutive failures and threshold, until when it is open, the last error, and the
    routes it holds."""
    with guarded():
        project = load(config)
        with opened_store(config, db, project=project) as store:
            rows = circuit_rows(project, store)
    if json_out:
        emit_json(rows)
        return
    print_rows(
        ("key", "state", "failures", "until", "routes", "last error"),
        [
            (
                r["key"],
                r["state"].replace("_", "-"),
                f"{r['failures']} of {r['failures_to_open']}" if r["failures_to_open"] else str(r["failures"]),
                short_time(r["until"]) if r["until"] and r["state"] == "open" else "",
                ", ".join(r["routes"]) or "(no route uses it now)",
                (r["last_error"] or "") if r["state"] != "closed" else "",
            )
            for r in rows
        ],
        wide=wide,
        empty="no circuit breaker is configured (circuit: on a connection or an outgoing)",
        styles={"state": lambda v: f"[green]{v}[/]" if v == "closed" else f"[red]{v}[/]"},
    )


@circuits_app.command("close")
def circuits_close(
    key: KeyArg, config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False
) -> None:
    """Close a breaker by hand: deliveries to its target resume at once, counting failures from zero. Audited as
    ``circuit.close``."""
    with guarded():
        project = load(config)
        now = datetime.now(UTC)
        with opened_store(config, db, project=project) as store:
            known = {r["key"]: r for r in circuit_rows(project, store)}
            if key not in known:
                listed = ", ".join(sorted(known)) or "none"
                raise UsageError(f"no circuit breaker {key!r} in {config} or its database (known: {listed})")
            actor = cli_actor()
            update = store.close_circuit(key, now=now, by=actor)
            before = update.before if update is not None else "closed"
            store.record_audit(actor, "circuit.close", {"key": key}, detail=f"was {before}", now=now)
            row: dict[str, Any] = {r["key"]: r for r in circuit_rows(project, store)}[key]
    if json_out:
        emit_json(row)
    elif before == "closed":
        out.print(f"circuit {key} was closed already", markup=False)
    else:
        out.print(f"circuit {key} closed (it was {before.replace('_', '-')}); deliveries resume", markup=False)
