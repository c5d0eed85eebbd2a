"""``crossdock tasks edit ID``: correct a task's entity and replay it as a new task (engine/task_edit.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
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
    json_error,
    load,
    opened_store,
    out,
)
from crossdock.engine.task_edit import (
    EditCheck,
    EditInvalid,
    apply_changes,
    check_edit,
    edit_task,
    editable,
    load_task,
    parse_set,
)
from crossdock.errors import UsageError
from crossdock.tasks import Task


def register(tasks_app: typer.Typer) -> None:
    tasks_app.command("edit")(tasks_edit)


def tasks_edit(
    task_id: Annotated[int, typer.Argument(metavar="ID")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="PATH=JSON: set a field (a.b, items[0].sku); the value is JSON: --set 'category=\"lamps\"'.",
        ),
    ] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="PATH: remove a field.")] = None,
    entity_file: Annotated[
        Path | None, typer.Option("--entity-file", help="The whole edited entity, a JSON file ('-': stdin).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; kept in both timelines and the audit log.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff and the verdict; change nothing.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Correct a task's entity and replay it: a new task (new) with the edited entity, checked by the route's
    validation; the original is skipped when skip applies to it (a finished one stays finished). Without --set,
    --unset or --entity-file, $EDITOR opens the entity."""
    with guarded():
        try:
            _edit(task_id, set_, unset, entity_file, reason, dry_run, config, db, json_out)
        except EditInvalid as exc:
            err.print(f"invalid edit, nothing changed: {exc.message}", markup=False)
            json_error(f"invalid edit: {exc.message}", 2)
            raise typer.Exit(2) from None


def _edit(
    task_id: int,
    set_: list[str] | None,
    unset: list[str] | None,
    entity_file: Path | None,
    reason: str | None,
    dry_run: bool,
    config: Path,
    db: str | None,
    json_out: bool,
) -> None:
    sets = [parse_set(text) for text in set_ or []]
    if entity_file is not None and (sets or unset):
        raise UsageError("give either --entity-file or --set/--unset, not both")
    project = load(config)
    with opened_store(config, db, project=project) as store:
        task = load_task(store, task_id)
        editable(project, task)  # refuse before the editor opens, not after the work is done
        if sets or unset:
            entity = apply_changes(task.entity, sets, unset or [])
        elif entity_file is not None:
            entity = _read_entity(entity_file)
        else:
            entity = _from_editor(task)
        check = check_edit(project, task, entity, reason=reason)
        if not check.valid or dry_run:
            _report_check(check, json_out, dry_run)
            return
        result = edit_task(
            store,
            project,
            check,
            actor=os.environ.get("CROSSDOCK_ACTOR", "cli"),
            now=datetime.now(UTC),
            audit_actor=cli_actor(),
        )
    if json_out:
        emit_json({**result.to_json(), "changes": check.diff})
        return
    moved = (
        f"task {result.original_id}: {result.original_before.value} → {result.original_after.value}"
        if result.original_after is not result.original_before
        else f"task {result.original_id} stays {result.original_before.value}"
    )
    out.print(f"edited task {result.original_id} as task {result.task_id} (new); {moved}", markup=False)
    _print_diff(check)
    if result.superseded:
        out.print(f"skipped {result.superseded} older due task(s) of the same record as superseded", markup=False)


def _report_check(check: EditCheck, json_out: bool, dry_run: bool) -> None:
    """The verdict without a write: exit 2 for an invalid edit, 0 for a valid dry run."""
    if json_out:
        emit_json({"valid": check.valid, "problem": check.problem, "changes": check.diff, "dry_run": dry_run})
    else:
        _print_diff(check)
        if check.valid:
            out.print(f"valid: task {check.task.id} would be replayed as a new task (dry run: nothing changed)")
    if not check.valid:
        err.print(f"invalid edit, nothing changed: {check.problem}", markup=False)
        raise typer.Exit(2)


def _print_diff(check: EditCheck) -> None:
    for change in check.diff:
        old = change["old"] if change["old"] is not None else "(absent)"
        new = change["new"] if change["new"] is not None else "(absent)"
        out.print(f"  {change['path']}: {old} → {new}", markup=False)


def _parse(text: bytes | str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EditInvalid(f"{where} is not JSON: {exc}") from None


def _read_entity(path: Path) -> Any:
    if str(path) == "-":
        return _parse(typer.get_binary_stream("stdin").read(), "stdin")
    try:
        return _parse(path.read_bytes(), str(path))
    except OSError as exc:
        raise UsageError(f"--entity-file {path}: {exc.strerror or exc}") from None


def _from_editor(task: Task) -> Any:
    """The entity in ``$VISUAL`` or ``$EDITOR`` (vi without either), read back when the editor exits."""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    if task.entity is not None:
        text = orjson.dumps(task.entity, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    else:
        text = task.raw or "{}\n"  # a record that could not be read: start from its raw text
    with tempfile.TemporaryDirectory(prefix="crossdock-edit-") as folder:
        path = Path(folder) / f"task-{task.id}.json"
        path.write_text(text, encoding="utf-8")
        try:
            code = subprocess.call([*shlex.split(command), str(path)])
        except OSError as exc:
            raise UsageError(f"cannot start the editor {command!r} ($EDITOR): {exc.strerror or exc}") from None
        if code != 0:
            raise UsageError(f"the editor {command!r} exited with {code}; nothing changed")
        return _parse(path.read_bytes(), "the edited entity")
