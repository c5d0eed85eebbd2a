"""Task storage. Only this package speaks SQL."""

from __future__ import annotations

from pathlib import Path

from crossdock.errors import ConfigError
from crossdock.store.base import (
    ActionResult,
    ImportCounts,
    ImportItem,
    ImportOptions,
    Settlement,
    Stats,
    Store,
    TaskFilter,
)

__all__ = [
    "ActionResult",
    "ImportCounts",
    "ImportItem",
    "ImportOptions",
    "Settlement",
    "Stats",
    "Store",
    "TaskFilter",
    "backend_name",
    "open_store",
]


def backend_name(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:", "postgresql+psycopg:")):
        return "postgresql"
    if url.startswith("memory:"):
        return "memory"
    raise ConfigError(
        f"unsupported database URL {url!r}; use sqlite:///path/to/file.db or postgresql://user@host/db",
        key="database",
    )


def sqlite_path(url: str, base: Path | None = None) -> Path:
    """``sqlite:///rel.db`` is relative to ``base`` (the project folder); ``sqlite:////abs.db`` is absolute."""
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("/"):
        rest = rest[1:]
    path = Path(rest)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def open_store(url: str, *, base: Path | None = None, upgrade: bool = True) -> Store:
    """Open (and by default create or migrate) the store a database URL names."""
    kind = backend_name(url)
    if kind == "sqlite":
        from crossdock.store.sqlite.store import SQLiteStore

        return SQLiteStore(sqlite_path(url, base), create=upgrade)
    if kind == "memory":
        from crossdock.store.memory import MemoryStore

        return MemoryStore()
    try:
        from crossdock.store.postgres.store import PostgresStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"PostgreSQL needs psycopg 3 ({exc}); reinstall crossdock, which depends on psycopg[binary,pool]",
            key="database",
        ) from exc
    return PostgresStore(url, create=upgrade)
