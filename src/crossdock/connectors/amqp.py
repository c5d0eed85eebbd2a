"""AMQP 0-9-1 (RabbitMQ) through aio-pika: a target that publishes with confirms, a source that acks late.

The target calls a task delivered only once the broker has confirmed the message: a nack, a returned (unroutable)
message, a closed channel or connection, or no confirm in time are transient failures, so the task is retried and
never finished unconfirmed. The source holds every message it hands to the importer unacknowledged, and acks them
in :meth:`AmqpSource.commit`, which the importer calls once their tasks are stored; a failed or killed run leaves
them to the broker, which delivers them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from pydantic import Field

from crossdock import tracing
from crossdock.connectors.base import (
    BatchTarget,
    ConnectorContext,
    Delivered,
    Malformed,
    Options,
    Source,
    UrlOrConnection,
    idempotency_key,
)
from crossdock.connectors.templates import compile_template
from crossdock.errors import PermanentError, SourceError, TransientError
from crossdock.tasks import Task

#: what a lost broker looks like from aio-pika: AMQP errors, a closed channel, a dead socket, no answer in time
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError, TimeoutError)


class AmqpConnectionOptions(Options):
    """A broker shared by the routes that name it (``connections: {bus: {type: amqp, url: ...}}``)."""

    type: Literal["amqp"] = "amqp"
    #: ``amqp://user:password@host:5672/vhost`` (``amqps://`` for TLS)
    url: str
    #: seconds to wait for the broker before the attempt counts as a transient failure
    connect_timeout: float = 10


class _Broker(UrlOrConnection):
    """Either ``url:`` or ``connection:`` (a ``type: amqp`` connection)."""

    url_kind: ClassVar[str] = "an amqp:// URL"
    connection_type: ClassVar[str] = "amqp"


class AmqpTargetOptions(Options, _Broker):
    type: Literal["amqp"] = "amqp"
    #: exchange to publish to; ``""`` is the default exchange (the routing key names the queue). Templated: ``{field}``
    exchange: str = ""
    #: routing key, templated from the entity: ``products.{category}``
    routing_key: str
    #: the broker returns a message no queue is bound for; it then counts as not delivered (retried)
    mandatory: bool = True
    #: written to disk by the broker (delivery mode 2), so a broker restart keeps it
    persistent: bool = True
    #: seconds to wait for the broker's confirm of one message
    confirm_timeout: float = Field(default=10, gt=0)
    #: message headers, templated from the entity
    headers: dict[str, str] = Field(default_factory=dict)


class AmqpSourceOptions(Options, _Broker):
    type: Literal["amqp"] = "amqp"
    queue: str
    #: declare the queue (durable) if it does not exist; otherwise a missing queue is an error
    declare: bool = False
    #: a run ends after this many messages (they are all held unacked until the run's tasks are stored)
    max_messages: int = Field(default=1000, ge=1, le=65535)
    #: a run ends when no message came for this many seconds
    idle_timeout: float = Field(default=1.0, gt=0)
    #: messages per page handed to the importer
    page_size: int = Field(default=100, ge=1)


def _broker_url(options: _Broker, context: ConnectorContext) -> tuple[str, float]:
    if options.url:
        return options.url, 10
    conn = context.connection(options.connection or "", AmqpConnectionOptions, "amqp")
    return conn.url, conn.connect_timeout


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- target ----------------------------------------------------------------------------------------------------


class AmqpTarget(BatchTarget):
    """Publishes one persistent JSON message per task, with the task's idempotency key as ``message_id``."""

    options_model = AmqpTargetOptions
    options: AmqpTargetOptions

    def __init__(self, options: AmqpTargetOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._exchange = compile_template(options.exchange)
        self._routing_key = compile_template(options.routing_key)
        self._headers = {k: compile_template(v) for k, v in options.headers.items()}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"amqp exchange {self.options.exchange or '(default)'} key {self.options.routing_key}"

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        """Publish all, then wait for all confirms: one round trip for the batch, one outcome per message."""
        try:
            channel = await self._ready()
        except TransientError as exc:
            return [exc for _ in items]
        return list(await asyncio.gather(*(self._publish(channel, task, entity) for task, entity in items)))

    async def _publish(self, channel: AbstractChannel, task: Task, entity: Any) -> Delivered | Exception:
        try:
            exchange_name = self._exchange(entity)
            routing_key = self._routing_key(entity)
            headers = {k: render(entity) for k, render in self._headers.items()}
            body = orjson.dumps(entity)
        except PermanentError as exc:
            return exc
        except TypeError as exc:
            return PermanentError(f"entity is not JSON-serialisable: {exc}")
        message_id = idempotency_key(task)
        tracing.inject(headers, task)  # traceparent of this task's delivery span, when tracing is on
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if self.options.persistent else None,
            timestamp=datetime.now(UTC),
            headers={"crossdock-route": task.route, "crossdock-identifier": task.identifier, **headers},
        )
        where = f"exchange {exchange_name or '(default)'} key {routing_key}"
        try:
            exchange = await self._exchange_object(channel, exchange_name)
            # publisher confirms: this returns only when the broker acked; a nack or a return raises
            await exchange.publish(
                message, routing_key, mandatory=self.options.mandatory, timeout=self.options.confirm_timeout
            )
        except aiormq.exceptions.PublishError:
            return TransientError(f"{where}: the broker returned the message (no queue is bound for it)")
        except aiormq.exceptions.DeliveryError:
            return TransientError(f"{where}: the broker did not confirm the message (nack)")
        except _BROKER_ERRORS as exc:
            await self._forget(channel)
            return TransientError(f"{where}: {self.context.redact(_why(exc))}")
        details = {"exchange": exchange_name, "routing_key": routing_key, "message_id": message_id}
        return Delivered(details=details, message=f"published to {where}, confirmed")

    async def _exchange_object(self, channel: AbstractChannel, name: str) -> AbstractExchange:
        if not name:
            return channel.default_exchange
        # not declared here: declaring is the broker owner's job, and a passive check per message costs a round trip
        return await channel.get_exchange(name, ensure=False)

    async def _ready(self) -> AbstractChannel:
        """Connect on first use (not in open(), so an unreachable broker is a retry, not a broken run).

        A connection the broker just closed (e.g. after a publish on a channel it had closed) may not know it yet:
        opening a channel on it then fails, so that attempt is made once more on a fresh connection.
        """
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            url, timeout = _broker_url(self.options, self.context)
            for attempt in (1, 2):
                try:
                    if self._connection is None or self._connection.is_closed:
                        self._connection = await aio_pika.connect(url, timeout=timeout)
                    self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                    return self._channel
                except (*_BROKER_ERRORS, RuntimeError) as exc:
                    await self._drop_connection()
                    if attempt == 2:
                        raise TransientError(
                            f"cannot reach the AMQP broker: {self.context.redact(_why(exc))}"
                        ) from None
            raise AssertionError("unreachable")

    async def _forget(self, channel: AbstractChannel) -> None:
        """A channel the broker closed (e.g. no such exchange) is replaced on the next delivery."""
        if self._channel is channel:
            self._channel = None
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await channel.close()

    async def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await connection.close()

    async def close(self) -> None:
        await self._drop_connection()


# --- source ----------------------------------------------------------------------------------------------------


class AmqpSource(Source):
    """Consumes a queue with manual acks; a run ends at ``max_messages`` or after ``idle_timeout`` of silence."""

    options_model = AmqpSourceOptions
    options: AmqpSourceOptions

    def __init__(self, options: AmqpSourceOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._connection: AbstractConnection | None = None
        #: handed to the importer, not yet acked, in delivery order
        self._held: list[AbstractIncomingMessage] = []

    def describe(self) -> str:
        return f"amqp queue {self.options.queue}"

    async def pages(self) -> AsyncIterator[list[Any]]:
        url, timeout = _broker_url(self.options, self.context)
        buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        try:
            self._connection = await aio_pika.connect(url, timeout=timeout)
            channel = await self._connection.channel()
            # the broker sends no more than we may hold unacked, so nothing is read past max_messages
            await channel.set_qos(prefetch_count=self.options.max_messages)
            if self.options.declare:
                queue = await channel.declare_queue(self.options.queue, durable=True)
            else:
                queue = await channel.get_queue(self.options.queue, ensure=True)
            tag = await queue.consume(buffer.put, no_ack=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise SourceError(f"no queue {self.options.queue!r} on the broker (or set declare: true)") from None
        except _BROKER_ERRORS as exc:
            raise SourceError(f"cannot consume {self.options.queue!r}: {self.context.redact(_why(exc))}") from None
        page: list[Any] = []
        try:
            while len(self._held) < self.options.max_messages:
                try:
                    message = await asyncio.wait_for(buffer.get(), self.options.idle_timeout)
                except TimeoutError:
                    break
                self._held.append(message)
                page.append(_record(message))
                if len(page) >= self.options.page_size:
                    yield page
                    page = []
            await queue.cancel(tag)
        except _BROKER_ERRORS as exc:
            raise SourceError(f"lost the broker while reading {self.options.queue!r}: {_why(exc)}") from None
        # anything that arrived after the last take goes back to the queue at once, for the next run
        while not buffer.empty():
            with contextlib.suppress(*_BROKER_ERRORS):
                await buffer.get_nowait().nack(requeue=True)
        if page:
            yield page

    async def commit(self) -> None:
        """The run's tasks are stored: ack every message handed over, in one frame."""
        if not self._held:
            return
        last, self._held = self._held[-1], []
        try:
            await last.ack(multiple=True)
        except _BROKER_ERRORS as exc:
            # the broker will deliver them again; their tasks exist, so delta makes the repeats "skipped"
            raise SourceError(f"could not ack {self.options.queue!r}: {_why(exc)}") from None

    async def close(self) -> None:
        """Without a commit, the held messages go back to the queue (closing the channel would do it too)."""
        if self._held:
            last, self._held = self._held[-1], []
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await last.nack(multiple=True, requeue=True)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(*_BROKER_ERRORS, RuntimeError):
                await connection.close()


def _record(message: AbstractIncomingMessage) -> Any:
    """A JSON object per message; anything else becomes a rejected task that keeps the body."""
    raw = message.body.decode("utf-8", "replace")
    where = f"message {message.message_id or message.delivery_tag}"
    try:
        data = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        return Malformed(raw, f"{where}: invalid JSON ({exc})")
    if not isinstance(data, dict):
        return Malformed(raw, f"{where}: expected a JSON object")
    return data
