"""The ``crossdock`` command. Exit codes: 0 ok, 1 operational failure, 2 usage or config error."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.table import Table

from crossdock import __version__
from crossdock.cli_base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    WideOpt,
    cli_actor,
    emit_json,
    err,
    fail,
    guarded,
    json_error,
    load,
    opened_store,
    out,
    print_rows,
    run_async,
    short_time,
)
from crossdock.cli_filters import SearchOpt, StatusOpt, WhereOpt, task_selection
from crossdock.config.models import parse_duration
from crossdock.errors import UsageError
from crossdock.redact import NO_SECRETS, url_secrets
from crossdock.tasks import ALL_STATUSES, TRANSITIONS, Action, Status, allowed_actions, iso

app = typer.Typer(
    name="crossdock",
    help="Move records between business systems as tracked, retryable, auditable tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Find, read and act on tasks.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
runs_app = typer.Typer(help="Import and export runs.", no_args_is_help=True)
cache_app = typer.Typer(help="The delta cache (fingerprints per route and identifier).", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
app.add_typer(cache_app, name="cache")

T = TypeVar("T")


def own_the_process() -> None:
    """The commands that run the engine own their process: tune the interpreter for it (see engine/tuning.py).
    Library users who build an Importer or Exporter keep their interpreter as they set it."""
    from crossdock.engine.tuning import tune_interpreter

    tune_interpreter()


def stop_quietly_on_sigterm() -> None:
    """Until the event loop takes SIGTERM over (and stops gracefully), a SIGTERM ends the command with 143 and no
    traceback: nothing was claimed or read yet."""

    def terminated(_signum: int, _frame: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, terminated)


def _version(value: bool) -> None:
    if value:
        out.print(f"crossdock {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """crossdock: every record is a task you can find, read, retry and audit."""


# --- init and check -----------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    config: Annotated[
        Path, typer.Option("-c", "--config", help="Name of the config file inside DIR.")
    ] = DEFAULT_CONFIG,
    db: Annotated[str | None, typer.Option("--db", help="Database URL to write into the config.")] = None,
) -> None:
    """Scaffold a project with a working example route."""
    from crossdock.scaffold import write_project

    with guarded():
        written = write_project(directory, force=force, config_name=config.name, database=db)
    for path in written:
        out.print(f"created {path}")
    out.print(f"\nnext: cd {directory} && crossdock check && crossdock run products-to-shop")


@app.command()
def check(config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Validate the project (and, with --db, that the database opens); print every error, exit 2 if any."""
    from crossdock.engine.checks import check_project

    report = check_project(config, database=db)
    if json_out:
        emit_json(report.to_json())
    else:
        for line in report.lines():
            (err if line.startswith(("config error", "test failed")) else out).print(line, markup=False)
    raise typer.Exit(2 if report.errors else 0)


# --- run ----------------------------------------------------------------------------------------


@app.command()
def run(
    route: Annotated[str, typer.Argument(help="Route (or shared incoming, with --incoming) to run.")],
    incoming: Annotated[bool, typer.Option("--incoming", help="Only import.")] = False,
    outgoing: Annotated[bool, typer.Option("--outgoing", help="Only export.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Ignore delta fingerprints this once.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Export at most N tasks.")] = None,
    grace: Annotated[
        str, typer.Option("--grace", help="On SIGTERM/Ctrl-C, how long deliveries in flight may take to finish.")
    ] = "30s",
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show INFO log lines too (same as --log-level info).")
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, warning (default) or error: the log lines shown on stderr."),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="text, or json for one JSON object per line.", case_sensitive=False)
    ] = "text",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read and decide everything, write and send nothing: counts, diffs, requests."),
    ] = False,
    show: Annotated[
        int, typer.Option("--show", min=0, max=1000, help="With --dry-run: changed records and requests shown.")
    ] = 10,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One import and/or export pass now; prints counts per resulting status.

    SIGTERM or Ctrl-C stops it gracefully: reading and claiming stop, deliveries on the wire finish within --grace
    and are recorded, unstarted tasks go back to new or retry. Exit 143 (SIGTERM) or 130 (SIGINT) then.

    --dry-run reads the source and runs transforms, validation, delta and the outgoing transform against the
    database as it is, but writes nothing (the database file is unchanged) and sends nothing."""
    from crossdock.engine.runner import RoutePass
    from crossdock.logs import configure_logging, redact_logs_with
    from crossdock.service import on_stop_signals
    from crossdock.tracing import session as tracing_session

    if dry_run:
        _dry_run(route, incoming, outgoing, full, show, verbose, log_level, config, db, json_out)
        return
    stop_quietly_on_sigterm()
    own_the_process()
    with guarded():
        try:
            grace_s = parse_duration(grace)
        except ValueError as exc:
            raise UsageError(f"--grace: {exc}") from None
        level = _log_level(log_level, verbose)
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format: {log_format!r} is neither text nor json")
        configure_logging("json" if log_format == "json" else "text", level)
        project = load(config)
        redact_logs_with(project.redact)
        # traces when OTEL_* asks for them (crossdock.tracing); the last spans are flushed before the exit
        with opened_store(config, db, project=project) as store, tracing_session():
            store.ensure_routes(project.routes)
            progress = None if json_out or not sys.stdout.isatty() else _progress_bar()
            one = RoutePass(
                project,
                store,
                route,
                incoming=incoming or not outgoing,
                outgoing=outgoing or not incoming,
                full=full,
                limit=limit,
                progress=progress,
            )

            async def run_pass() -> dict[str, Any]:
                with on_stop_signals(one.stop, grace=grace_s):
                    return await one.run()

            try:
                result = run_async(run_pass())
            except asyncio.CancelledError:
                why = one.stopped_by or "a signal"
                fail(
                    f"stopped by {why}: the grace period ended, deliveries still in flight were cancelled and their "
                    "tasks handed back (they are sent again, with the same idempotency key)",
                    _SIGNAL_EXIT.get(why, 1),
                )
    if json_out:
        emit_json(result)
    else:
        _print_run(result)
    if one.stopped_by is not None:
        raise typer.Exit(_SIGNAL_EXIT.get(one.stopped_by, 1))
    raise typer.Exit(1 if result["status"] != "ok" else 0)


def _dry_run(
    route: str,
    incoming: bool,
    outgoing: bool,
    full: bool,
    show: int,
    verbose: bool,
    log_level: str | None,
    config: Path,
    db: str | None,
    json_out: bool,
) -> None:
    """``run --dry-run``: the store opened read-only, the source read without being told, nothing sent."""
    from crossdock.engine.dry_run import dry_run, open_read_only
    from crossdock.logs import configure_logging, redact_logs_with
    from crossdock.redact import Redactor

    with guarded():
        if outgoing:
            raise UsageError("--dry-run previews the import and what it would send; it does not take --outgoing")
        configure_logging("text", _log_level(log_level, verbose))
        project = load(config)
        redact_logs_with(project.redact)
        url = project.database_url(db)
        hide = Redactor([*project.redact.secrets, *url_secrets(url)])
        try:
            store, note = open_read_only(url, base=config.parent)
        except OSError as exc:
            raise UsageError(hide(f"cannot open database {url}: {exc}")) from None
        store.redact = project.redact
        try:
            result = run_async(
                dry_run(
                    project, store, route, show=show, full=full, requests=not incoming, notes=[note] if note else []
                )
            )
        finally:
            store.close()
    if json_out:
        emit_json(result)
    else:
        _print_dry_run(result)
    raise typer.Exit(1 if result["status"] != "ok" else 0)


def _print_dry_run(result: dict[str, Any]) -> None:
    """The dry run as text: counts, reasons, field diffs, then the requests."""

    def show(value: Any) -> str:
        return orjson.dumps(value).decode()

    c = result["counts"]
    failed = f"  failed: {result['error']}" if result["status"] != "ok" else ""
    out.print(
        f"dry run of {result['route']}: read {result['read']:,} records in {result['duration_s']:.2f} s; "
        f"nothing written, nothing sent{failed}",
        markup=False,
    )
    out.print(
        f"  would import: new {c['new']:,}  changed {c['changed']:,}  unchanged {c['unchanged']:,}  "
        f"filtered {c['filtered']:,}  rejected {c['rejected']:,}  superseded {c['superseded']:,}",
        markup=False,
    )
    for kind in ("filtered", "rejected"):
        for r in result["reasons"][kind]:
            out.print(f"  {kind} {r['count']:,}: {r['reason']}", markup=False)
    for change in result["changes"]:
        if change["delivered_task"] is None:
            out.print(f"  changed {change['identifier']}: {change['note']}", markup=False)
            continue
        out.print(f"  changed {change['identifier']} (against task {change['delivered_task']}):", markup=False)
        for f in change["fields"]:
            old = show(f["old"]) if "old" in f else "(absent)"
            new = show(f["new"]) if "new" in f else "(removed)"
            out.print(f"    {f['path']}: {old} → {new}", markup=False)
        if change["more_fields"]:
            out.print(f"    … {change['more_fields']} more fields", markup=False)
    o = result["outgoing"]
    out.print(
        f"  would send {o['would_send']:,} to {o['target']} ({o['new_tasks']:,} from this import, "
        f"{o['queued_new']:,} already new; {o['retry_waiting']:,} in retry go when due)",
        markup=False,
    )
    for r in result["requests"]:
        if r["outcome"] != "send":
            out.print(f"  {r['identifier']}: {r['outcome']}: {r['reason']}", markup=False)
            continue
        req = r["request"]
        if "method" in req:
            out.print(f"  {req['method']} {req['url']}  {show(req['body'])}", markup=False)
        elif "text" in req:
            out.print(f"  {req['file']} ({req['mode']}): {req['text'].rstrip()}", markup=False)
        else:
            out.print(f"  {req['target']}: {show(req['body'])}", markup=False)
    for note in result["notes"]:
        out.print(f"  note: {note}", markup=False)


#: what --log-level accepts
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _log_level(name: str | None, verbose: bool) -> int:
    if name is None:
        return logging.INFO if verbose else logging.WARNING
    level = LOG_LEVELS.get(name.lower())
    if level is None:
        raise UsageError(f"--log-level: {name!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


#: exit codes after a graceful stop, as a shell expects of a process ended by that signal
_SIGNAL_EXIT = {"SIGTERM": 143, "SIGINT": 130}


def _progress_bar() -> Callable[[int], None]:
    last = [0.0]

    def show(read: int) -> None:
        now = asyncio.get_event_loop().time()
        if now - last[0] > 0.2:
            last[0] = now
            err.print(f"\r  read {read:,} records…", end="", markup=False)

    return show


def _print_run(result: dict[str, Any]) -> None:
    imp = result.get("incoming")
    if imp:
        out.print(
            f"import {imp['incoming']}: read {imp['read']:,} records in {imp['duration_s']:.2f} s"
            + (f"  [red]{imp['status']}: {imp['error']}[/]" if imp["status"] != "ok" else ""),
        )
        if imp.get("held"):
            out.print(f"  {imp['incoming']} {imp['held']}: the source was not read", markup=False)
        for name, r in imp["routes"].items() if not imp.get("held") else ():
            if not r["active"]:
                out.print(f"  {name}: inactive, nothing imported")
                continue
            out.print(
                f"  {name}: new {r['new']:,}  changed {r['changed']:,}  unchanged {r['unchanged']:,}  "
                f"filtered {r['filtered']:,}  rejected {r['rejected']:,}  superseded {r['superseded']:,}"
            )
    exp = result.get("outgoing")
    if exp:
        parts = "  ".join(f"{k} {v:,}" for k, v in sorted(exp["by_status"].items()))
        released = f"  released {exp['released']:,}" if exp.get("released") else ""
        out.print(f"export {exp['route']}: {exp['claimed']:,} tasks in {exp['duration_s']:.2f} s  {parts}{released}")
        if exp.get("error"):
            out.print(f"  [red]{exp['error']}[/]")
        if exp.get("paused"):
            out.print(f"  route {exp['route']} {exp['paused']}", markup=False)
        if exp.get("held"):
            more = "nothing more" if exp["claimed"] else "nothing"
            out.print(
                f"  route {exp['route']} {exp['held']}: {more} sent; the due tasks stay new or retry with their "
                "attempts",
                markup=False,
            )
    if result.get("note"):
        out.print(result["note"], markup=False)
    if result.get("stopped_by"):
        out.print(
            f"stopped by {result['stopped_by']}: deliveries on the wire were finished and recorded, "
            "unstarted tasks went back to new or retry",
            markup=False,
        )
    table = Table(title=f"tasks of {result['route']} by status", show_header=True)
    for s in ALL_STATUSES:
        table.add_column(s.value, justify="right")
    table.add_row(*(f"{result['by_status'][s.value]:,}" for s in ALL_STATUSES))
    out.print(table)


# --- tasks ----------------------------------------------------------------------------------------


@tasks_app.command("list")
def tasks_list(
    status: StatusOpt = None,
    route: Annotated[str | None, typer.Option("--route", "-r")] = None,
    identifier: Annotated[str | None, typer.Option("--identifier", "-i")] = None,
    search: SearchOpt = None,
    where: WhereOpt = None,
    created_after: Annotated[str | None, typer.Option("--created-after")] = None,
    created_before: Annotated[str | None, typer.Option("--created-before")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000)] = 50,
    cursor: Annotated[int | None, typer.Option("--cursor", help="Continue below this task id.")] = None,
    wide: WideOpt = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    with guarded():
        selection = task_selection(
            status=status,
            route=route,
            identifier=identifier,
            search=search,
            where=where,
            created_after=created_after,
            created_before=created_before,
        )
        with opened_store(config, db) as store:
            items, next_cursor = store.list_tasks(selection, limit=limit, cursor=cursor)
    if json_out:
        emit_json({"items": [t.to_json() for t in items], "next_cursor": str(next_cursor) if next_cursor else None})
        return
    print_rows(
        ("id", "route", "identifier", "status", "attempts", "updated", "error"),
        [
            (
                str(t.id),
                t.route,
                t.identifier or "",
                t.status.value,
                str(t.attempts),
                iso(t.updated_at) or "",
                t.error or "",
            )
            for t in items
        ],
        wide=wide,
        empty="no task matches" + (" these filters" if not selection.is_empty() else ""),
        styles={"status": _badge_text, "updated": short_time},
    )
    if next_cursor:
        err.print(f"more: --cursor {next_cursor}", markup=False)


_COLOURS = {
    "new": "blue",
    "processing": "magenta",
    "finished": "green",
    "failed": "red",
    "skipped": "grey50",
    "rejected": "dark_orange",
    "waiting": "yellow",
    "retry": "purple",
}


def _badge(status: Status) -> str:
    return f"[{_COLOURS[status.value]}]{status.value}[/]"


def _badge_text(status: str) -> str:
    return f"[{_COLOURS[status]}]{status}[/]" if status in _COLOURS else status


@tasks_app.command("show")
def tasks_show(
    task_id: Annotated[int, typer.Argument(metavar="ID")],
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One task with its entity and its history as a timeline."""
    with guarded(), opened_store(config, db) as store:
        task = store.get_task(task_id)
        if task is None:
            fail(f"no task with id {task_id}")
        logs = store.task_logs(task_id)
    from crossdock.timeline import timeline

    lines = timeline(task, logs)
    if json_out:
        data = task.to_json()
        data["entity"] = task.entity
        data["raw"] = task.raw
        data["logs"] = [ln.to_json() for ln in lines]
        data["allowed_actions"] = [a.value for a in allowed_actions(task.status)]
        emit_json(data)
        return
    out.print(f"[bold]task {task.id}[/]  {task.route}  {task.identifier or '(no identifier)'}  {_badge(task.status)}")
    out.print(f"attempts {task.attempts}  created {iso(task.created_at)}  updated {iso(task.updated_at)}")
    if task.next_attempt_at and task.status is Status.RETRY:
        out.print(f"next attempt {iso(task.next_attempt_at)}")
    if task.seen_count > 1:
        out.print(f"seen {task.seen_count} times, last {iso(task.last_seen_at)}")
    if task.error:
        out.print(f"[red]error:[/] {task.error}", markup=True)
    if task.related_task_id:
        out.print(f"related task: {task.related_task_id}")
    allowed = allowed_actions(task.status)
    out.print("actions: " + (", ".join(f"crossdock tasks {a.value} {task.id}" for a in allowed) or "none"))
    out.print("\n[bold]entity[/]")
    if task.entity is not None:
        out.print(orjson.dumps(task.entity, option=orjson.OPT_INDENT_2).decode(), markup=False)
    if task.raw is not None:
        out.print("[bold]raw record[/]")
        out.print(task.raw, markup=False)
    out.print("\n[bold]timeline[/]")
    for ln in lines:
        move = f"{ln.from_status.value if ln.from_status else '·'} → {ln.to_status.value}" if ln.to_status else ""
        out.print(f"{iso(ln.at)}  {ln.phase:<7} {ln.level:<7} {move:<24} {ln.actor or ''}", markup=False)
        out.print(f"    {ln.message}", markup=False)
        for key in ("method", "url", "status", "duration_ms"):
            if key in ln.details:
                out.print(f"      {key}: {ln.details[key]}", markup=False)
        if ln.details.get("response"):
            out.print(f"      response: {str(ln.details['response'])[:300]}", markup=False)


def _act(
    action: Action,
    ids: list[int] | None,
    status: list[Status] | None,
    route: str | None,
    identifier: str | None,
    created_after: str | None,
    created_before: str | None,
    reason: str | None,
    config: Path,
    db: str | None,
    json_out: bool,
    search: str | None = None,
    where: str | None = None,
) -> None:
    with guarded():
        filtered = status or route or identifier or created_after or created_before or search or where
        if not ids and not filtered:
            raise UsageError(f"name task ids, or a filter (--status, --route, --where, ...), to {action.value}")
        if ids and filtered:
            raise UsageError("give either task ids or a filter, not both")
        selection = task_selection(
            ids=ids,
            status=status,
            route=route,
            identifier=identifier,
            search=search,
            where=where,
            created_after=created_after,
            created_before=created_before,
        )
        with opened_store(config, db) as store:
            result = store.apply_action(
                action,
                selection,
                actor=os.environ.get("CROSSDOCK_ACTOR", "cli"),
                reason=reason,
                now=datetime.now(UTC),
                # the store audits it as it audits the API's and the dashboard's actions
                audit_actor=cli_actor(),
            )
    if json_out:
        emit_json(result.to_json())
    else:
        out.print(f"{action.value}: matched {result.matched}, changed {result.changed}")
        if result.superseded:
            out.print(
                f"skipped {result.superseded} older task(s) of the same records as superseded: each record goes out "
                "once, from its newest task"
            )
        for line in result.refused:
            err.print(f"refused: {line}", markup=False)
    if ids and result.matched < len(set(ids)):
        err.print(f"error: {len(set(ids)) - result.matched} of the ids do not exist", markup=False)
        raise typer.Exit(1)
    if result.refused and result.changed == 0:
        target = TRANSITIONS[action].target.value
        err.print(f"error: no task changed; {action.value} moves tasks to {target} only from the statuses above")
        raise typer.Exit(1)


def _action_command(action: Action, doc: str) -> None:
    def command(
        ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...", help="Task ids.")] = None,
        status: StatusOpt = None,
        route: Annotated[str | None, typer.Option("--route", "-r")] = None,
        identifier: Annotated[str | None, typer.Option("--identifier", "-i")] = None,
        created_after: Annotated[str | None, typer.Option("--created-after")] = None,
        created_before: Annotated[str | None, typer.Option("--created-before")] = None,
        search: SearchOpt = None,
        where: WhereOpt = None,
        reason: Annotated[str | None, typer.Option("--reason", help="Why; kept in the task log.")] = None,
        config: ConfigOpt = DEFAULT_CONFIG,
        db: DbOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        _act(
            action,
            ids,
            status,
            route,
            identifier,
            created_after,
            created_before,
            reason,
            config,
            db,
            json_out,
            search=search,
            where=where,
        )

    command.__doc__ = doc
    tasks_app.command(action.value)(command)


_action_command(Action.RETRY, "Send again: finished, failed or skipped → new (attempts start again).")
_action_command(Action.SKIP, "Do not send: new, retry, failed or waiting → skipped.")
_action_command(Action.FINISH, "Settle waiting tasks as finished.")
_action_command(Action.FAIL, "Settle waiting tasks as failed.")


# --- stats, prune, db, runs, cache -------------------------------------------------------------------


@app.command()
def stats(
    route: Annotated[str | None, typer.Option("--route", "-r")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Recount with COUNT(*) and report drift.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Task counts per status and route (read from the counters)."""
    with guarded(), opened_store(config, db) as store:
        if config.exists():
            from crossdock.config.loader import route_names

            store.ensure_routes(route_names(config))
        if verify:
            result, recounted = store.counted(route)
            drift = _drift(result.by_route, recounted)
        else:
            result, drift = store.stats(route), None
    data = result.to_json()
    if verify:
        data["drift"] = drift
    if json_out:
        emit_json(data)
    else:
        table = Table(show_header=True, header_style="bold")
        table.add_column("route")
        for s in ALL_STATUSES:
            table.add_column(s.value, justify="right")
        for name, counts in sorted(result.by_route.items()):
            table.add_row(name, *(f"{counts[s.value]:,}" for s in ALL_STATUSES))
        table.add_row("[bold]total[/]", *(f"[bold]{result.by_status[s.value]:,}[/]" for s in ALL_STATUSES))
        out.print(table)
        out.print(f"total {result.total:,}")
        if verify:
            out.print("counters match COUNT(*)" if not drift else f"[red]drift:[/] {drift}")
    if verify and drift:
        raise typer.Exit(1)


def _drift(counted: dict[str, dict[str, int]], actual: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    drift: dict[str, dict[str, int]] = {}
    for route in set(counted) | set(actual):
        for s in ALL_STATUSES:
            a = counted.get(route, {}).get(s.value, 0)
            b = actual.get(route, {}).get(s.value, 0)
            if a != b:
                drift.setdefault(route, {})[s.value] = a - b
    return drift


@app.command()
def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age such as 30d or 12h.")],
    status: StatusOpt = None,
    route: Annotated[str | None, typer.Option("--route", "-r")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete old tasks (default: finished, skipped, failed, rejected) in batches; counters stay exact."""
    with guarded():
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise UsageError(f"--older-than: {exc}") from None
        statuses = status or [Status.FINISHED, Status.SKIPPED, Status.FAILED, Status.REJECTED]
        with opened_store(config, db) as store:
            cutoff = datetime.now(UTC) - timedelta(seconds=age)
            deleted = store.prune(older_than=cutoff, statuses=statuses, route=route, actor=cli_actor())
    if json_out:
        emit_json({"deleted": deleted})
    else:
        out.print(f"deleted {deleted:,} tasks")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None) -> None:
    """Create or migrate the schema (also done on every start)."""
    with guarded(), opened_store(config, db) as store:
        version = store.upgrade()
    out.print(f"schema at version {version} ({store.backend})")


@runs_app.command("list")
def runs_list(
    route: Annotated[str | None, typer.Option("--route", "-r")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    wide: WideOpt = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The latest import and export runs with their summaries."""
    with guarded(), opened_store(config, db) as store:
        runs = store.list_runs(route, limit)
    if json_out:
        emit_json([r.to_json() for r in runs])
        return
    rows = []
    for r in runs:
        duration = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
        rows.append(
            (
                str(r.id),
                r.route,
                r.part,
                iso(r.started_at) or "",
                f"{duration:.2f} s" if duration is not None else "running",
                r.status,
                _run_text(r.part, r.summary) + (f" — {r.error}" if r.error else ""),
            )
        )
    print_rows(
        ("id", "route", "part", "started", "duration", "status", "summary"),
        rows,
        wide=wide,
        empty="no run yet" + (f" of route {route}" if route else ""),
        styles={"status": _run_status, "started": short_time},
    )


def _run_status(status: str) -> str:
    colour = {"ok": "green", "failed": "red", "abandoned": "red", "stopped": "yellow", "running": "blue"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _run_text(part: str, s: dict[str, Any]) -> str:
    if part == "incoming":
        if not s:
            return ""
        return (
            f"read {s.get('read', 0)} new {s.get('new', 0)} changed {s.get('changed', 0)} unchanged "
            f"{s.get('unchanged', 0)} filtered {s.get('filtered', 0)} rejected {s.get('rejected', 0)} "
            f"superseded {s.get('superseded', 0)}"
        )
    by = s.get("by_status", {})
    return f"claimed {s.get('claimed', 0)} " + " ".join(f"{k} {v}" for k, v in sorted(by.items()))


@cache_app.command("show")
def cache_show(
    route: str,
    identifier: Annotated[str, typer.Option("--identifier", "-i")],
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The fingerprint, latest task and last-seen time of one identifier."""
    with guarded(), opened_store(config, db) as store:
        entry = store.cache_show(route, identifier)
    if entry is None:
        fail(f"no fingerprint for {identifier!r} on route {route!r}")
    data = {
        "route": entry.route,
        "identifier": entry.identifier,
        "fingerprint": entry.fingerprint,
        "task_id": entry.task_id,
        "task_status": entry.task_status.value if entry.task_status else None,
        "last_seen_at": iso(entry.last_seen_at),
    }
    if json_out:
        emit_json(data)
    else:
        for k, v in data.items():
            out.print(f"{k}: {v}", markup=False)


@cache_app.command("clear")
def cache_clear(
    route: str,
    identifier: Annotated[str | None, typer.Option("--identifier", "-i")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Forget fingerprints, so the next import sends those records again."""
    with guarded(), opened_store(config, db) as store:
        n = store.cache_clear(route, identifier)
    if json_out:
        emit_json({"cleared": n})
    else:
        out.print(f"cleared {n} fingerprint(s)")


# --- transform preview ---------------------------------------------------------------------------


@app.command()
def transform(
    route: Annotated[str, typer.Argument(help="Route whose transformers to apply.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="A JSON object, a JSON array, or NDJSON.")],
    outgoing: Annotated[
        bool, typer.Option("--outgoing", help="Also apply the outgoing transform and show the request.")
    ] = False,
    trace: Annotated[bool, typer.Option("--trace", help="Show the entity after each step.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Test sample records as a real run would take them: transforms, identifier, validation, delta (nothing
    is written or sent)."""
    from crossdock.engine.dry_run import open_read_only
    from crossdock.engine.preview import evaluate_samples, parse_samples
    from crossdock.redact import Redactor

    with guarded():
        project = load(config)
        project.route(route)
        try:
            raw = input_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--input {input_file}: {exc.strerror}") from None
        records = parse_samples(raw)
        url = project.database_url(db)
        hide = Redactor([*project.redact.secrets, *url_secrets(url)])
        try:
            store, _note = open_read_only(url, base=config.parent)
        except OSError as exc:
            raise UsageError(hide(f"cannot open database {url}: {exc}")) from None
        store.redact = project.redact
        try:
            results = run_async(evaluate_samples(project, store, route, records, outgoing=outgoing, trace=trace))
        finally:
            store.close()
    if json_out:
        emit_json(results)
        return
    for i, result in enumerate(results, 1):
        _print_sample(i, result)


def _print_sample(number: int, result: dict[str, Any]) -> None:
    """One sample as text: its verdict, the steps (``--trace``), and per entity validation, delta and output."""
    from rich.markup import escape

    def dump(value: Any, indent: str = "    ") -> None:
        for line in orjson.dumps(value, option=orjson.OPT_INDENT_2).decode().splitlines():
            out.print(indent + line, markup=False)

    reason = f" — {result['reason']}" if result.get("reason") else ""
    out.print(f"[bold]record {number}[/]: {result['outcome']}" + escape(reason))
    for row in result.get("trace", []):
        if row["stage"] == "input":
            continue
        if "stopped" in row:
            out.print(f"  {row['stage']} {row['step']}: {row['stopped']} — {row['reason']}", markup=False)
            continue
        out.print(f"  after {row['stage']} {row['step']}:", markup=False)
        out.print("    " + orjson.dumps(row["output"]).decode(), markup=False)
    for entity in result.get("results", []):
        ident = entity["identifier"]
        head = f"  identifier {ident}" if ident is not None else "  no identifier"
        status = entity["task_status"]
        out.print(head + (f": the task would be {status}" if status else ": no new task"), markup=False)
        check = entity["validation"]
        size = f"{check['bytes']} of {check['max_entity_bytes']} bytes" if check["bytes"] is not None else ""
        schema = f"schema {check['schema_file']}: {check['schema_verdict']}" if check["schema_file"] else "no schema"
        out.print(f"  validation: {check['verdict']} ({', '.join(p for p in (schema, size) if p)})", markup=False)
        delta = entity["delta"]
        out.print(f"  delta: {delta['outcome']} — {delta['text']}", markup=False)
        for change in delta.get("fields", []):
            old = orjson.dumps(change["old"]).decode() if "old" in change else "(none)"
            new = orjson.dumps(change["new"]).decode() if "new" in change else "(removed)"
            out.print(f"    {change['path']}: {old} → {new}", markup=False)
        if delta.get("more_fields"):
            out.print(f"    … and {delta['more_fields']} more field(s)", markup=False)
        sent = entity.get("outgoing")
        if sent is None:
            if entity["outcome"] == "ok":
                dump(entity["entity"], "  ")
            continue
        for row in sent["trace"]:
            if "stopped" in row:
                out.print(f"  outgoing {row['step']}: {row['stopped']} — {row['reason']}", markup=False)
            else:
                out.print(f"  after outgoing {row['step']}:", markup=False)
                out.print("    " + orjson.dumps(row["output"]).decode(), markup=False)
        if sent["output"] is not None:
            dump(sent["output"], "  ")
        if sent["outcome"] == "send":
            when = "as it would go out" if sent["would_send"] else "if it were sent; delta sends nothing now"
            out.print(f"  request ({when}):", markup=False)
            dump(sent["request"])
        else:
            out.print(f"  outgoing: {sent['outcome']} — {sent['reason']}", markup=False)


# --- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    port: Annotated[int, typer.Option("--port", help="Port of the dashboard (when served).")] = 8080,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo project and its database are written.")
    ] = Path("crossdock-demo"),
    products: Annotated[int, typer.Option("--products", help="Products in the mock ERP.")] = 500,
    config: Annotated[
        Path, typer.Option("-c", "--config", help="Name of the demo's config file inside --dir.")
    ] = DEFAULT_CONFIG,
    db: DbOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run the routes until their retries settle, print a summary and exit.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address the dashboard binds.")] = "127.0.0.1",
    keep: Annotated[
        bool, typer.Option("--keep", help="Continue the last demo's database instead of starting afresh.")
    ] = False,
) -> None:
    """Mock ERP and shop + PIM on loopback, the fan-out example, then scheduler, workers and dashboard."""
    from crossdock.demo import run_demo
    from crossdock.logs import configure_logging

    own_the_process()
    with guarded():
        if not once:
            configure_logging("text")
        code = run_demo(
            directory,
            port=port,
            products=products,
            console=out,
            config_name=config.name,
            database=db,
            serve=not once,
            host=host,
            keep=keep,
        )
    raise typer.Exit(code)


# --- serve and worker -----------------------------------------------------------------------------

LogFormatOpt = Annotated[
    str,
    typer.Option("--log-format", help="text, or json for one JSON object per line.", case_sensitive=False),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        help="Deliveries in flight at once, all routes together (default: per route only).",
    ),
]
GraceOpt = Annotated[
    str, typer.Option("--grace", help="On SIGTERM/SIGINT, how long in-flight deliveries may take to finish.")
]


def _service(
    kind: str, config: Path, db: str | None, log_format: str, concurrency: int | None, grace: str, **web: Any
) -> None:
    from crossdock.logs import configure_logging, redact_logs_with
    from crossdock.service import ServiceOptions, run_serve, run_worker
    from crossdock.tracing import session as tracing_session

    stop_quietly_on_sigterm()
    own_the_process()
    with guarded():
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format: {log_format!r} is neither text nor json")
        try:
            grace_s = parse_duration(grace)
        except ValueError as exc:
            raise UsageError(f"--grace: {exc}") from None
        configure_logging("json" if log_format == "json" else "text")
        project = load(config)
        url = db or project.database_url()
        project.redact.add(*url_secrets(url))  # a --db password is as secret as the config's
        redact_logs_with(project.redact)
        with opened_store(config, db, project=project) as store, tracing_session():
            store.ensure_routes(project.routes)
            options = ServiceOptions(concurrency=concurrency, grace=grace_s, **web)
            runner = run_serve if kind == "serve" else run_worker
            code = run_async(runner(project, store, url, options))
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address the web app binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the web app.")] = 8080,
    concurrency: ConcurrencyOpt = None,
    grace: GraceOpt = "30s",
    log_format: LogFormatOpt = "text",
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Scheduler + workers + web (API and dashboard, when installed) until SIGTERM or Ctrl-C."""
    _service("serve", config, db, log_format, concurrency, grace, host=host, port=port)


@app.command()
def worker(
    concurrency: ConcurrencyOpt = None,
    grace: GraceOpt = "30s",
    log_format: LogFormatOpt = "text",
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Export worker only: delivers routes without an outgoing schedule; run several to scale out."""
    _service("worker", config, db, log_format, concurrency, grace)


@app.command()
def connectors(json_out: JsonOpt = False, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List the source, target and connection types installed here (built-in and plugins) with their options."""
    from crossdock.connectors.registry import installed

    listing = installed()
    if json_out:
        emit_json(listing)
        return
    for kind, rows in listing.items():
        table = Table(title=kind, title_justify="left", show_edge=False)
        for column in ("type", "origin", "options"):
            table.add_column(column)
        for row in rows:
            options = f"[red]{row['error']}[/]" if "error" in row else ", ".join(row["options"]) or "-"
            table.add_row(row["type"], row["origin"], options)
        out.print(table)


def _register_plugins() -> None:
    """Commands that live with their feature (tokens with the web app; routes, circuits, alerts and db copy in
    their own modules)."""
    from crossdock.cli_alerts import register as register_alerts
    from crossdock.cli_circuits import register as register_circuits
    from crossdock.cli_db_copy import register as register_db_copy
    from crossdock.cli_db_partitions import register as register_db_partitions
    from crossdock.cli_routes import register as register_routes
    from crossdock.cli_task_edit import register as register_task_edit
    from crossdock.cli_task_files import register as register_task_files
    from crossdock.web.cli_commands import register

    register(app)
    register_routes(app)
    register_circuits(app)
    register_alerts(app)
    register_task_files(tasks_app)
    register_db_copy(db_app)
    register_db_partitions(db_app)
    register_task_edit(tasks_app)


_register_plugins()


#: set to 1 to see the full traceback of an unexpected error
TRACEBACK_ENV = "CROSSDOCK_TRACEBACK"


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # an error nobody foresaw still gets one line with its cause, never a wall of traceback (unless asked)
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        from crossdock.errors import describe_error

        message = NO_SECRETS(describe_error(exc))
        err.print(f"error: {message} (set {TRACEBACK_ENV}=1 for the traceback)", markup=False)
        json_error(message, 1)
        sys.exit(1)


if __name__ == "__main__":
    main()
