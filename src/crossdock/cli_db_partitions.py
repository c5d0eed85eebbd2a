"""``crossdock db partitions``: the PostgreSQL task partitions (#18) with their rows and size on disk, and the size
of the next ones."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from crossdock.cli_base import DEFAULT_CONFIG, ConfigOpt, DbOpt, JsonOpt, emit_json, guarded, opened_store, out
from crossdock.errors import UsageError

SizeOpt = Annotated[
    int | None,
    typer.Option("--size", min=1, help="Task ids per partition from the next one created on (default 1,000,000)."),
]


def register(db_app: typer.Typer) -> None:
    db_app.command("partitions")(db_partitions)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def db_partitions(
    size: SizeOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the task partitions of a PostgreSQL database (id range, rows, size); --size sets the next ones' size."""
    from crossdock.store.postgres.store import PostgresStore

    with guarded(), opened_store(config, db) as store:
        if not isinstance(store, PostgresStore):
            raise UsageError(
                f"db partitions: the {store.backend} store keeps its tasks in one table; partitions are a PostgreSQL "
                "feature (see docs/deploy.md, 'Large task tables')"
            )
        if size is not None:
            store.set_partition_size(size)
        next_size, parts = store.partition_report()
    if json_out:
        emit_json(
            {
                "size": next_size,
                "partitions": [
                    {
                        "from_id": p.lo,
                        "to_id": p.hi,
                        "tasks_estimate": p.tasks,
                        "table_bytes": p.table_bytes,
                        "index_bytes": p.index_bytes,
                        "log_bytes": p.log_bytes,
                    }
                    for p in parts
                ],
            }
        )
        return
    table = Table("partition", "task ids", "tasks (estimate)", "table", "indexes", "logs")
    for p in parts:
        table.add_row(
            f"tasks_{p.lo}", f"{p.lo:,}–{p.hi - 1:,}", f"{p.tasks:,}", _mib(p.table_bytes), _mib(p.index_bytes),
            _mib(p.log_bytes),
        )  # fmt: skip
    out.print(table)
    out.print(f"new partitions hold {next_size:,} task ids each")
