"""Listings for people and for pipes: whole values on one line per row when stdout is not a terminal (or with
``--wide``), a message instead of an empty table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from crossdock.cli import app
from crossdock.store import Settlement, open_store
from crossdock.store.base import ImportItem, ImportOptions
from crossdock.tasks import Action, Status

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LONG = "422 Unprocessable Entity: " + " ".join(f"field{i} is not allowed here" for i in range(20))


def failed_tasks(db: str, n: int) -> None:
    store = open_store(db)
    try:
        items = [ImportItem(Status.NEW, f"SKU-{i}", b'{"a": 1}', i.to_bytes(16, "big")) for i in range(n)]
        store.import_batch("shop", items, run_id=None, options=ImportOptions(), now=NOW)
        claimed = store.claim_due_tasks("shop", n, worker="w", lease_until=NOW + timedelta(minutes=5), now=NOW)
        store.settle(
            [Settlement(t.id, Action.DELIVERY_FAILED, "w", error=f"{LONG}\nline {t.id}") for t in claimed],
            now=NOW,
        )
    finally:
        store.close()


def test_tasks_list_into_a_pipe_prints_every_error_whole_on_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'out.db'}"
    failed_tasks(db, 3)
    shown = CliRunner().invoke(app, ["tasks", "list", "--status", "failed", "--db", db])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "route", "identifier", "status", "attempts", "updated", "error"]
    assert len(lines) == 4
    for line in lines[1:]:
        cells = line.split("\t")
        assert cells[3] == "failed" and cells[5].startswith("2026-12-01T12:00:00")
        assert cells[6].startswith(LONG) and cells[6].endswith(f"line {cells[0]}"), "the error is whole, on one line"


def test_an_empty_listing_says_so(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    tasks = CliRunner().invoke(app, ["tasks", "list", "--status", "failed", "--db", db])
    assert tasks.exit_code == 0 and tasks.stdout == ""
    assert "no task matches these filters" in tasks.stderr
    runs = CliRunner().invoke(app, ["runs", "list", "--db", db])
    assert runs.exit_code == 0 and runs.stdout == "" and "no run yet" in runs.stderr


def test_a_narrow_terminal_stacks_the_error_under_its_row(tmp_path: Path, monkeypatch: Any) -> None:
    from rich.console import Console

    import crossdock.cli_base as cli_base

    db = f"sqlite:///{tmp_path / 'narrow.db'}"
    failed_tasks(db, 2)
    screen = Console(width=80, force_terminal=True, color_system=None, highlight=False, soft_wrap=True, record=True)
    monkeypatch.setattr(cli_base, "out", screen)
    import crossdock.cli as cli_module

    monkeypatch.setattr(cli_module, "out", screen)
    shown = CliRunner().invoke(app, ["tasks", "list", "--status", "failed", "--db", db])
    assert shown.exit_code == 0, shown.output
    text = screen.export_text()
    lines = text.splitlines()
    assert lines[0].split() == ["id", "route", "identifier", "status", "attempts", "updated", "error"]
    assert lines[1].split() == ["2", "shop", "SKU-1", "failed", "1", "2026-12-01", "12:00:00"]
    body = []
    for line in lines[2:]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    assert " ".join(body).startswith(LONG[:60]), text  # the error as text, a line of words at a time
    assert all(len(line) <= 80 for line in lines)
    assert max(len(b.split()) for b in body) > 5, "not a word per line"
