"""What every ``crossdock`` command shares: the consoles, JSON output, the mapping of errors to exit codes (0 ok, 1
operational failure, 2 usage or config error), the common options, and the store a command opens.

Feature modules that add commands (``web/cli_commands.py``) import these from here, not from ``cli``, so the
command tree imports them and never the other way round.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from crossdock.errors import ConfigError, ConfigErrors, CrossdockError, UsageError
from crossdock.redact import Redactor, redacting_logs, url_secrets
from crossdock.store import Store, backend_name, open_store

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("-c", "--config", envvar="CROSSDOCK_CONFIG", help="Project config file.", show_default=True),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar="CROSSDOCK_DB", help="Database URL (default: the config's database:)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_CONFIG = Path("crossdock.yaml")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True) if code != 2 else err.print(message, markup=False)
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def guarded() -> Iterator[None]:
    """Turn known errors into the contract's exit codes, with messages naming file, line and key."""
    try:
        yield
    except ConfigErrors as exc:
        for e in exc.errors:
            err.print(f"config error: {e.message}", markup=False)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"config error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    except UsageError as exc:
        err.print(f"usage error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    except CrossdockError as exc:
        err.print(f"error: {exc.message}", markup=False)
        json_error(exc.message, 1)
        raise typer.Exit(1) from None


def json_error(message: str, code: int) -> None:
    """With --json, an error is a JSON object on stdout too, so a script reading stdout sees why it failed."""
    if "--json" in sys.argv[1:]:
        emit_json({"status": "error", "error": message, "exit_code": code})


def load(config: Path) -> Any:
    from crossdock.engine.project import load_project

    return load_project(config)


def database_url(
    config: Path, db: str | None, *, project: Any = None, need_config: bool = False
) -> tuple[str, Path, set[str]]:
    """The URL of --db, CROSSDOCK_DB, the config's database:, or sqlite:///crossdock.db beside it; the folder a
    relative SQLite path is relative to; and the secrets the URL holds or the config's ``${...}`` values gave."""
    url = db
    base = config.parent if config else Path.cwd()
    #: what the config's ${...} values gave that must not show (a password read from a secret file)
    secrets: set[str] = set(project.redact.secrets) if project is not None else set()
    if url is None:
        if project is not None:
            url = project.database_url()
        elif config.exists():
            from crossdock.config.loader import read_database

            url, secrets = read_database(config)
        elif need_config:
            raise ConfigError(
                "file not found; create a project with `crossdock init DIR` or pass -c PATH", file=str(config)
            )
    url = url or "sqlite:///crossdock.db"
    backend_name(url)
    return url, base, {*secrets, *url_secrets(url)}


def store_for(config: Path, db: str | None, *, project: Any = None, need_config: bool = False) -> Store:
    """The store named by --db, CROSSDOCK_DB, the config's database:, or sqlite:///crossdock.db beside it."""
    url, base, secrets = database_url(config, db, project=project, need_config=need_config)
    hide = Redactor(sorted(secrets))  # the driver may quote the URL's password in a warning or an error
    try:
        with redacting_logs(hide, "psycopg", "psycopg.pool"):
            store = open_store(url, base=base)
    except OSError as exc:
        raise CrossdockError(hide(f"cannot open database {url}: {exc}")) from None
    if project is not None:
        store.redact = project.redact  # what the audit log keeps of a reason
    return store


@contextmanager
def opened_store(config: Path, db: str | None, *, project: Any = None) -> Iterator[Store]:
    """The store of :func:`store_for`, closed when the block ends."""
    store = store_for(config, db, project=project)
    try:
        yield store
    finally:
        store.close()


WideOpt = Annotated[
    bool, typer.Option("--wide", help="Full values, one line per row, tab-separated (what a pipe gets anyway).")
]


def print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    wide: bool,
    empty: str,
    styles: dict[str, Callable[[str], str]] | None = None,
) -> None:
    """A listing: a table on a terminal; with ``--wide`` or into a pipe, a header line and one line per row with
    every value whole and tab-separated (``cut``, ``awk`` and ``grep`` work on it). No rows: ``empty`` on stderr."""
    if not rows:
        err.print(empty, markup=False)
        return
    if wide or not out.is_terminal:
        lines = ["\t".join(columns), *("\t".join(_one_line(v) for v in row) for row in rows)]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    styles = styles or {}
    if _too_narrow(columns, rows, out.width):
        _print_stacked(columns, rows, styles)
        return
    table = Table(show_header=True, header_style="bold")
    for col in columns:
        # short values (ids, statuses, times) stay whole; long text folds onto more lines, never cut off
        table.add_column(col, overflow="fold", no_wrap=col in _WHOLE)
    for row in rows:
        cells = (
            styles[col](value) if col in styles else escape(value) for col, value in zip(columns, row, strict=True)
        )
        table.add_row(*cells)
    out.print(table)


#: the least room the last (long text) column of a table gets before the listing stacks it under each row
MIN_TEXT_WIDTH = 32


def _too_narrow(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> bool:
    """Whether a table would squeeze its last column (an error, a summary) to a few letters per line."""
    fixed = sum(max(len(col), *(len(row[i]) for row in rows)) + 3 for i, col in enumerate(columns[:-1])) + 4
    longest = max(len(row[-1]) for row in rows)
    return longest > MIN_TEXT_WIDTH and width - fixed < MIN_TEXT_WIDTH


def _print_stacked(
    columns: Sequence[str], rows: Sequence[Sequence[str]], styles: dict[str, Callable[[str], str]]
) -> None:
    """A narrow terminal: the short columns aligned on one line, the long last one whole on the lines below it,
    indented, so an error reads as text instead of a word per line."""
    shown = [
        [styles[col](value) if col in styles else escape(value) for col, value in zip(columns, row, strict=True)]
        for row in rows
    ]
    plain = [[Text.from_markup(cell).cell_len for cell in row] for row in shown]
    widths = [max(len(col), *(row[i] for row in plain)) for i, col in enumerate(columns[:-1])]
    head = [f"[bold]{col}[/]" + " " * (w - len(col)) for col, w in zip(columns, widths, strict=False)]
    out.print("  ".join([*head, f"[bold]{columns[-1]}[/]"]))
    for cells, lengths in zip(shown, plain, strict=True):
        line = [cell + " " * (w - n) for cell, n, w in zip(cells, lengths, widths, strict=False)]
        out.print("  ".join(line))
        if cells[-1]:
            # wrapped here, indented, whatever the console's soft wrap: the text stays readable under its row
            out.print(
                Padding(Text.from_markup(cells[-1], overflow="fold"), (0, 0, 0, 4), expand=False), soft_wrap=False
            )


def short_time(value: str) -> str:
    """An ISO time as a table shows it on a terminal: to the second, UTC (``--wide`` and pipes get it whole)."""
    return value[:19].replace("T", " ") if len(value) > 19 and value[10:11] == "T" else value


#: columns whose values a table never breaks
_WHOLE = frozenset({"id", "status", "attempts", "updated", "started", "duration", "part"})


def _one_line(value: str) -> str:
    return " ".join(value.split()) if any(c in value for c in "\t\r\n") else value


def cli_user() -> str:
    """Who runs the command: ``CROSSDOCK_ACTOR``, else the login name."""
    try:
        return os.environ.get("CROSSDOCK_ACTOR") or getpass.getuser()
    except Exception:  # no login name in some containers
        return "cli"


def cli_actor() -> str:
    """How a command's changes appear in the audit log: ``cli:USER@HOST``."""
    return f"cli:{cli_user()}@{socket.gethostname()}"


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
