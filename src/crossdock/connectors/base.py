"""The connector interface. Sources yield pages of records; targets deliver one entity (or a batch).

Connectors raise :class:`~crossdock.errors.TransientError` or :class:`~crossdock.errors.PermanentError` for
delivery problems and :class:`~crossdock.errors.SourceError` when a source cannot be read. The engine alone turns
them into task statuses.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from crossdock.errors import ConfigError
from crossdock.redact import NO_SECRETS, Redactor
from crossdock.tasks import Task


class Options(BaseModel):
    """Base of every connector's options: unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str


class UrlOrConnection(BaseModel):
    """Options that name their server either inline (``url:``) or by a shared ``connection:``."""

    model_config = ConfigDict(extra="forbid")
    #: what the error says a URL and a connection are, e.g. "an amqp:// URL" and "amqp"
    url_kind: ClassVar[str] = "a URL"
    connection_type: ClassVar[str] = ""
    url: str | None = None
    connection: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> UrlOrConnection:
        if bool(self.url) == bool(self.connection):
            raise ValueError(
                f"give either url: ({self.url_kind}) or connection: NAME (a type: {self.connection_type} connection)"
            )
        return self


_C = TypeVar("_C")


@dataclass(slots=True)
class Malformed:
    """A record the source could not parse; it becomes a rejected task keeping the raw text."""

    raw: str
    reason: str


@dataclass
class ConnectorContext:
    """What a connector may know about the project it runs in."""

    root: Path = field(default_factory=Path.cwd)
    #: name -> validated connection options (``connections:`` in the config)
    connections: Mapping[str, Any] = field(default_factory=dict)
    redact: Redactor = NO_SECRETS
    #: start of the last successful import of this route or incoming
    last_run: datetime | None = None
    #: shared clients (one aiohttp session and rate limiter per connection), owned by the engine
    clients: dict[str, Any] = field(default_factory=dict)
    #: sources only: the store (its storages let a source remember what it has read: file hashes, an SQL
    #: cursor), the name of the incoming being run, and whether this is a ``--full`` run that ignores such memory
    store: Any = None
    incoming: str = ""
    full: bool = False

    def connection(self, name: str, options_type: type[_C], type_name: str) -> _C:
        """The validated options of connection ``name``, which must be a ``type: type_name`` connection."""
        options = self.connections.get(name)
        if options is None:
            raise ConfigError(f"no connection named {name!r} under connections:", key="connection")
        if not isinstance(options, options_type):
            raise ConfigError(f"connection {name!r} is not a type: {type_name} connection", key="connection")
        return options


class Source(abc.ABC):
    """Reads records from an external system, page by page, so memory stays flat."""

    options_model: ClassVar[type[Options]]

    def __init__(self, options: Any, context: ConnectorContext) -> None:
        self.options = options
        self.context = context

    @abc.abstractmethod
    def pages(self) -> AsyncIterator[list[Any]]:
        """Yield lists of records: dicts (entities) or :class:`Malformed`."""

    def describe(self) -> str:
        return self.options.type  # type: ignore[no-any-return]

    async def commit(self) -> None:
        """Make the run's reading permanent: save a cursor, ack messages, move or delete files, remember hashes.

        Called once, after the last batch of a successful run is committed to the store, and never after a failed
        run, so a crash before it makes the next run read the same records again (at least once) instead of
        losing them. May raise :class:`SourceError`; the run is then failed, but its records stay.
        """

    def report(self) -> dict[str, Any]:
        """Counts for the run summary beyond records (e.g. files read and skipped)."""
        return {}

    async def close(self) -> None:
        """Release connections. Called once after the last page, after :meth:`commit` when the run succeeded."""


@dataclass(slots=True)
class Delivered:
    """A successful delivery: what goes into the export log, and an optional value stored on the task."""

    details: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    message: str = "delivered"


class Target(abc.ABC):
    """Delivers entities to an external system. Must be safe to call concurrently."""

    options_model: ClassVar[type[Options]]
    #: targets that can take many entities in one call set this and implement :meth:`deliver_batch`; an instance
    #: may set it from its options (an HTTP target batches only when configured to)
    supports_batch: bool = False

    def __init__(self, options: Any, context: ConnectorContext) -> None:
        self.options = options
        self.context = context

    async def open(self) -> None:
        """Prepare clients before the first delivery of a run."""

    async def close(self) -> None:
        """Release clients after the last delivery of a run."""

    @abc.abstractmethod
    async def deliver(self, task: Task, entity: Any) -> Delivered:
        """Send one entity. Raise TransientError or PermanentError when it is not accepted."""

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        """Send many entities; one outcome per item, in order."""
        raise NotImplementedError

    def preview(self, task: Task, entity: Any) -> dict[str, Any]:
        """What :meth:`deliver` would send for ``entity``, without sending or opening anything (a dry run shows it).

        Targets that know their wire format say more (HTTP: method, URL, headers, body; file: the path and text);
        this default names the target and the entity it would get. Raise PermanentError for an entity it would
        refuse before sending (a placeholder with no value)."""
        return {"target": self.describe(), "body": entity}

    def describe(self) -> str:
        return self.options.type  # type: ignore[no-any-return]


class BatchTarget(Target):
    """A target whose natural unit is a batch (a file append, a SQL transaction, a publish with confirms): it
    implements :meth:`deliver_batch`, and one delivery is a batch of one."""

    supports_batch = True

    async def deliver(self, task: Task, entity: Any) -> Delivered:
        outcome = (await self.deliver_batch([(task, entity)]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @abc.abstractmethod
    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        """Send many entities; one outcome per item, in order."""


def idempotency_key(task: Task) -> str:
    """Stable per task across retries and workers, so a target can drop duplicates."""
    return f"crossdock-{task.route}-{task.id}"
