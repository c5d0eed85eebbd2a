"""Edit and replay: a person corrects a task's entity, the route checks it, a new task carries it.

The correction becomes a new task instead of changing the entity in place: the original keeps what came in and
what happened to it (attempts, errors), and the edit is a fact of its own with a diff in the timeline and the audit
log. The edited entity is the record after transforms, so it is checked the way an import checks a transformed
record (identifier, ``validate.max_entity_bytes``, ``validate.schema``) and is not transformed again. The
CLI, the API and the dashboard all come through :func:`check_edit` and :func:`edit_task`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import xxhash

from crossdock.engine.importer import _schema_problem, _spec
from crossdock.engine.project import CompiledRoute, Project
from crossdock.errors import CrossdockError, StepConfigError, TaskNotFound, UsageError
from crossdock.store.base import EditResult, Store, TaskEdit
from crossdock.store.ledger import edit_refusal
from crossdock.tasks import Task
from crossdock.transform.paths import MISSING, Segment, delete_path, format_path, parse_path, set_path

#: how much of an old or new value a diff keeps (compact JSON); the task's entity holds the whole value
VALUE_LIMIT = 200
#: changed paths a diff lists; past them one line says how many more
DIFF_LIMIT = 100


class EditInvalid(CrossdockError):
    """The edited entity does not pass its route's checks; nothing was changed."""


class EditRefused(CrossdockError):
    """This task cannot be edited now; nothing was changed."""


@dataclass(frozen=True, slots=True)
class EditCheck:
    """The verdict on an edited entity before anything is written: what changes, and whether the route takes it."""

    task: Task
    #: the edited entity (masked values a reader left as shown put back)
    entity: Any
    #: ``{"path", "old", "new"}`` per changed path, values as compact JSON (None: absent), redacted
    diff: list[dict[str, Any]]
    #: why the route refuses it; None when it is valid
    problem: str | None
    #: what the store writes; None when invalid
    edit: TaskEdit | None

    @property
    def valid(self) -> bool:
        return self.problem is None


# --- building the edited entity ----------------------------------------------------------------------------


def parse_set(text: str) -> tuple[str, Any]:
    """``PATH=JSON`` of ``--set``: the value is JSON, so a string needs quotes inside the shell's."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise UsageError(f"--set {text!r}: write PATH=JSON, e.g. --set 'category=\"lamps\"' or --set price=12.5")
    try:
        return path.strip(), orjson.loads(value)
    except orjson.JSONDecodeError:
        raise UsageError(
            f"--set {text}: {value!r} is not JSON. The value is parsed as JSON, so a string needs double quotes "
            f"inside the shell's quotes: --set '{path.strip()}=\"{value}\"' (numbers, true, false, null, [..] and "
            "{..} go as they are)"
        ) from None


def _segments(path: str, option: str) -> tuple[Segment, ...]:
    try:
        return parse_path(path)
    except StepConfigError as exc:
        raise UsageError(f'{option} {path}: {exc.message} (paths read like a.b, items[0].sku, ["odd key"])') from None


def apply_changes(
    entity: Any,
    sets: Sequence[tuple[str, Any]] = (),
    unsets: Sequence[str] = (),
    *,
    labels: tuple[str, str] = ("--set", "--unset"),
) -> Any:
    """A copy of ``entity`` with each ``(path, value)`` set and each path removed, in that order; ``labels`` name
    the two in errors (the CLI's options, the API's fields)."""
    set_label, unset_label = labels
    if not isinstance(entity, dict):
        raise UsageError(
            "the task has no entity object to change field by field (a record that could not be read is kept as its "
            'raw text): give the whole entity instead (--entity-file, $EDITOR, or "entity" in the API)'
        )
    edited: dict[str, Any] = copy.deepcopy(entity)
    for path, value in sets:
        segments = _segments(path, set_label)
        try:
            set_path(edited, segments, value)
        except (TypeError, IndexError) as exc:
            raise UsageError(
                f"{set_label} {path}: {exc}; a list index must exist already, or be the list's length"
            ) from None
    for path in unsets:
        if delete_path(edited, _segments(path, unset_label)) is MISSING:
            raise UsageError(f"{unset_label} {path}: the entity has nothing at {path}")
    return edited


def restore_masked(original: Any, edited: Any, redact: Callable[[str], str]) -> Any:
    """Put back the stored value wherever the edit holds it as a reader saw it masked: an entity fetched from the
    API or the dashboard shows secrets as ``***``, and sending that back must not overwrite them."""
    if isinstance(original, dict) and isinstance(edited, dict):
        return {k: restore_masked(original[k], v, redact) if k in original else v for k, v in edited.items()}
    if isinstance(original, list) and isinstance(edited, list):
        return [restore_masked(original[i], v, redact) if i < len(original) else v for i, v in enumerate(edited)]
    if isinstance(original, str) and isinstance(edited, str) and edited != original and redact(original) == edited:
        return original
    return edited


# --- the diff ----------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # 1, 1.0 and true are equal in Python but not in the JSON a target receives
    return type(a) is type(b) and a == b


def _shown(value: Any, redact: Callable[[str], str]) -> str | None:
    if value is MISSING:
        return None
    text = orjson.dumps(value).decode()
    if len(text) > VALUE_LIMIT:
        text = text[: VALUE_LIMIT - 1] + "…"
    return redact(text)


def entity_diff(old: Any, new: Any, redact: Callable[[str], str]) -> list[dict[str, Any]]:
    """The changed paths, old → new: objects compared key by key, lists index by index, anything else whole."""
    changes: list[tuple[tuple[Segment, ...], Any, Any]] = []

    def walk(a: Any, b: Any, path: tuple[Segment, ...]) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in [*a, *(k for k in b if k not in a)]:
                walk(a.get(key, MISSING), b.get(key, MISSING), (*path, key))
        elif isinstance(a, list) and isinstance(b, list):
            for i in range(max(len(a), len(b))):
                walk(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, (*path, i))
        elif not _same(a, b):
            changes.append((path, a, b))

    walk(old, new, ())
    diff = [
        {"path": format_path(path) or "(the entity)", "old": _shown(a, redact), "new": _shown(b, redact)}
        for path, a, b in changes[:DIFF_LIMIT]
    ]
    if len(changes) > DIFF_LIMIT:
        diff.append({"path": "…", "old": None, "new": f"{len(changes) - DIFF_LIMIT} more changed paths"})
    return diff


# --- the verdict and the write -----------------------------------------------------------------------------


def route_of(project: Project, task: Task) -> CompiledRoute:
    """The task's route, whose checks an edit must pass; refused when it is no longer configured."""
    route = project.routes.get(task.route)
    if route is None:
        raise EditRefused(
            f"task {task.id} belongs to route {task.route!r}, which is not in {project.path}: an edit is checked by "
            "its route's validation, so it cannot be edited. Put the route back in the config to edit its tasks"
        )
    return route


def editable(project: Project, task: Task) -> CompiledRoute:
    """The route, once sure the task may be edited at all (whatever the entity): its route exists, it is not
    being delivered."""
    refusal = edit_refusal(task.id, task.status)
    if refusal is not None:
        raise EditRefused(refusal)
    return route_of(project, task)


def check_edit(project: Project, task: Task, entity: Any, *, reason: str | None = None) -> EditCheck:
    """Check ``entity`` as the new entity of ``task`` the way an import checks a transformed record; writes
    nothing. Raises :class:`EditRefused` when the task cannot be edited whatever the entity."""
    route = editable(project, task)
    redact = project.redact
    entity = restore_masked(task.entity, entity, redact)
    diff = entity_diff(task.entity if task.entity is not None else MISSING, entity, redact)

    def verdict(problem: str) -> EditCheck:
        return EditCheck(task, entity, diff, redact(problem), None)

    if not isinstance(entity, dict):
        return verdict(f"the entity must be a JSON object, not {type(entity).__name__}")
    if not diff:
        return verdict(
            "the edit changes nothing: the entity is as stored. To send it again as it is, use retry "
            f"(crossdock tasks retry {task.id}, or the Retry button)"
        )
    identifier = route.identifier(entity)
    if identifier is None:
        return verdict(f"identifier {_spec(route.config.identifier)} is missing or empty in the edited entity")
    if task.identifier is not None and identifier != task.identifier:
        return verdict(
            f"the edit changes the identifier from {task.identifier!r} to {identifier!r}: an edit replays the same "
            "record. Keep the identifier; to send another record, import it (crossdock tasks import)"
        )
    data = orjson.dumps(entity, option=orjson.OPT_SORT_KEYS)
    limit = route.config.validate_.max_entity_bytes
    if len(data) > limit:
        return verdict(f"validate.max_entity_bytes: the entity is {len(data)} bytes, over the limit of {limit}")
    if route.schema_validator is not None:
        problem = _schema_problem(route.schema_validator, entity)
        if problem is not None:
            return verdict(problem)
    edit = TaskEdit(
        entity=data,
        # the record as the source sends it, not the edited version: the same unchanged record polled again is then
        # "unchanged" (the fix stays, nothing is resent), and only a change at the source makes a new task
        fingerprint=bytes.fromhex(task.fingerprint) if task.fingerprint else xxhash.xxh3_128_digest(data),
        identifier=identifier,
        diff=diff,
        reason=redact(reason) if reason else None,
    )
    return EditCheck(task, entity, diff, None, edit)


def load_task(store: Store, task_id: int) -> Task:
    task = store.get_task(task_id)
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return task


def edit_task(
    store: Store,
    project: Project,
    check: EditCheck,
    *,
    actor: str,
    now: datetime,
    audit_actor: str | None = None,
) -> EditResult:
    """Write a valid :func:`check_edit` verdict: raises :class:`EditInvalid` with the reason when it is not valid,
    and the store's refusal when the task changed meanwhile (a worker claimed it)."""
    if check.edit is None:
        raise EditInvalid(check.problem or "the edit is not valid")
    return store.edit_task(check.task.id, check.edit, actor=actor, now=now, audit_actor=audit_actor)
