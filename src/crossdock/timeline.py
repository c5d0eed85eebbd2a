"""A task's history as people read it: the import line first, then every logged transition."""

from __future__ import annotations

from crossdock.tasks import LogLine, Status, Task


def timeline(task: Task, logs: list[LogLine]) -> list[LogLine]:
    """Prepend the import event, which is recorded on the task row itself rather than as a log line. A task an edit
    created was not imported: its first line ("edited from task N") is its start."""
    if logs and "edited_from" in logs[0].details:
        return list(logs)
    # a line without a status change (an edit's "edited as task M" on a task that stays as it is) says nothing
    # about how the task began
    moves = [ln for ln in logs if ln.to_status is not None]
    first = _initial_status(task, moves)
    if first in (Status.SKIPPED, Status.REJECTED):
        message = (task.error or first.value) if not moves else _import_reason(task, moves)
    else:
        message = "imported"
    if task.run_id is not None:
        message += f" (run {task.run_id})"
    assert task.created_at is not None
    created = LogLine(
        at=task.created_at,
        level="warning" if first is Status.REJECTED else "info",
        phase="import",
        message=message or "imported",
        actor="import",
        from_status=None,
        to_status=first,
    )
    return [created, *logs]


def _import_reason(task: Task, logs: list[LogLine]) -> str:
    return "imported as " + (logs[0].from_status.value if logs[0].from_status else task.status.value)


def _initial_status(task: Task, logs: list[LogLine]) -> Status:
    if not logs:
        return task.status
    head = logs[0]
    claimed = head.details.get("claimed_from") if head.details else None
    if claimed:
        return Status(claimed)
    return head.from_status or task.status
