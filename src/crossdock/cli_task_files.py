"""``crossdock tasks export`` and ``crossdock tasks import``: take tasks out for a bulk fix, feed them back in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from crossdock.cli_base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    cli_actor,
    emit_json,
    err,
    guarded,
    load,
    opened_store,
    out,
    run_async,
)
from crossdock.cli_filters import SearchOpt, StatusOpt, WhereOpt, task_selection
from crossdock.errors import UsageError
from crossdock.task_files import ExportFormat, ImportMode, import_pages, sniff, write_export


def register(tasks_app: typer.Typer) -> None:
    tasks_app.command("export")(tasks_export)
    tasks_app.command("import")(tasks_import)


def tasks_export(
    status: StatusOpt = None,
    route: Annotated[str | None, typer.Option("--route", "-r")] = None,
    identifier: Annotated[str | None, typer.Option("--identifier", "-i")] = None,
    search: SearchOpt = None,
    where: WhereOpt = None,
    created_after: Annotated[str | None, typer.Option("--created-after")] = None,
    created_before: Annotated[str | None, typer.Option("--created-before")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="ndjson (default) or csv.")] = "ndjson",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of to stdout (replaced if it exists).")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Write the matching tasks, one line each (id, route, identifier, status, attempts, error, times, entity),
    newest first; streamed, so memory stays flat however many match."""
    with guarded():
        if fmt not in ("ndjson", "csv"):
            raise UsageError(f"--format: {fmt!r} is neither ndjson nor csv")
        kind: ExportFormat = "csv" if fmt == "csv" else "ndjson"
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
            if output is None:
                written = write_export(store, selection, kind, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                partial = output.with_name(output.name + ".partial")
                with open(partial, "wb") as handle:
                    written = write_export(store, selection, kind, handle)
                partial.replace(output)  # a reader never sees half an export
    err.print(f"exported {written:,} task(s)" + (f" to {output}" if output else ""), markup=False)


def tasks_import(
    file: Annotated[Path, typer.Argument(help="NDJSON: the output of `tasks export`, or records as a source reads.")],
    route: Annotated[str, typer.Option("--route", "-r", help="The route to feed.")],
    mode: Annotated[
        str,
        typer.Option(
            "--as",
            help="auto (default): an export's entities skip the transforms, other records go through them as the "
            "source's would; record or entity to say so for every line.",
        ),
    ] = "auto",
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Feed a file into a route as if its source had read it: identifier, validation, delta and supersede apply
    (and the transforms, for records); prints the counts `run` prints."""
    from crossdock.engine.importer import Importer
    from crossdock.engine.project import effective_active

    with guarded():
        if mode not in ("auto", "record", "entity"):
            raise UsageError(f"--as: {mode!r} is not one of auto, record, entity")
        if not file.is_file():
            raise UsageError(f"{file}: no such file")
        project = load(config)
        compiled = project.route(route)
        as_: ImportMode = "record" if mode == "record" else "entity" if mode == "entity" else "auto"
        found = sniff(file, as_)
        with opened_store(config, db, project=project) as store:
            store.ensure_routes(project.routes)
            if not effective_active(compiled, store.route_states()):
                raise UsageError(f"route {route} is inactive; activate it first (crossdock routes activate {route})")
            importer = Importer(project, store)
            importer.transforms = found.transforms

            async def go() -> Any:
                return await importer.run_incoming(
                    compiled.incoming, actor=f"import:{cli_actor()}", pages=import_pages(found), only={route}
                )

            summary = run_async(go())
    result = summary.to_json()
    result["file"] = {"path": str(file), "entities": found.entities, "records": found.records}
    if json_out:
        emit_json(result)
    else:
        what = "entities of an export (no transforms)" if not found.transforms else "records (through the transforms)"
        out.print(
            f"import {file} into {route}: read {summary.read:,} {what} in {summary.duration_s:.2f} s", markup=False
        )
        if summary.status != "ok":
            out.print(f"  [red]{summary.status}: {summary.error}[/]")
        r = result["routes"][route]
        out.print(
            f"  {route}: new {r['new']:,}  changed {r['changed']:,}  unchanged {r['unchanged']:,}  "
            f"filtered {r['filtered']:,}  rejected {r['rejected']:,}  superseded {r['superseded']:,}",
            markup=False,
        )
    if summary.status != "ok":
        raise typer.Exit(1)
