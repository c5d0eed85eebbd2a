"""``crossdock db copy --to URL``: move an installation to another database (the embedded SQLite file to
PostgreSQL when it outgrows one machine, or back), then verify the target by counts and ``stats --verify``."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from crossdock.cli_base import DEFAULT_CONFIG, ConfigOpt, DbOpt, JsonOpt, database_url, emit_json, err, guarded, out
from crossdock.redact import Redactor, redacting_logs, url_secrets

ToOpt = Annotated[
    str,
    typer.Option(
        "--to",
        help="Database URL to copy into (postgresql://... or sqlite:///path.db); created and migrated when empty.",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Empty a target that holds other data first, then copy into it."),
]


def register(db_app: typer.Typer) -> None:
    db_app.command("copy")(db_copy)


def db_copy(
    to: ToOpt,
    force: ForceOpt = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy everything in the database (--db, CROSSDOCK_DB or the config's database:) into --to, then verify it.

    Stop every crossdock process on the source first. Run it again after an interruption: it continues."""
    from crossdock.store.copy import copy_database

    with guarded():
        url, base, secrets = database_url(config, db)
        hide = Redactor(sorted({*secrets, *url_secrets(to)}))
        last = [0.0]

        def progress(table: str, copied: int, total: int) -> None:
            # a line every few seconds on stderr: a million tasks take a while
            if json_out or time.monotonic() - last[0] < 5:
                return
            last[0] = time.monotonic()
            err.print(f"{table}: {copied:,} of {total:,} rows", markup=False)

        with redacting_logs(hide, "psycopg", "psycopg.pool"):
            report = copy_database(url, to, base=base, force=force, progress=progress)
    if json_out:
        emit_json(report.to_json())
    else:
        table = Table(show_header=True, header_style="bold")
        for column in ("table", "source", "target", "copied now", ""):
            table.add_column(column, justify="left" if column in ("table", "") else "right")
        for t in report.tables:
            mark = "ok" if t.ok else "[red]differs[/]"
            table.add_row(t.name, f"{t.source:,}", f"{t.target:,}", f"{t.copied:,}", mark)
        out.print(table)
        out.print("counters on the target match COUNT(*)" if not report.drift else f"[red]drift:[/] {report.drift}")
        if report.recount_diff:
            out.print(f"[red]task counts differ from the source's:[/] {report.recount_diff}")
        verb = "continued" if report.resumed else "copied"
        state = "verified" if report.ok else "[red]NOT verified[/]"
        out.print(f"{verb} {report.source} → {report.target} in {report.seconds:.1f}s: {state}")
    if not report.ok:
        raise typer.Exit(1)
