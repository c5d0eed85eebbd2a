"""OpenTelemetry traces: one record followed from a webhook request through its import to its delivery.

Optional twice over. Without the OpenTelemetry packages (``pip install 'crossdock[otel]'``) nothing here imports
them; with them but without ``OTEL_*`` settings that ask for traces (an OTLP endpoint, or ``OTEL_TRACES_EXPORTER``),
no provider and no exporter thread is started either. Until :func:`setup` succeeds every hook is one check of a
module global (``_tracer is None``), so the import and delivery hot paths cost nothing measurable.

The SDK reads the standard variables itself: endpoints, headers, timeouts (``OTEL_EXPORTER_OTLP_*``), the
sampler (``OTEL_TRACES_SAMPLER[_ARG]``), the resource (``OTEL_SERVICE_NAME``, default ``crossdock``, and
``OTEL_RESOURCE_ATTRIBUTES``), the batch processor (``OTEL_BSP_*``), the propagators (``OTEL_PROPAGATORS``).
Only the choice of exporter is made here, from ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none`` or any
installed exporter's entry point name), because the SDK keeps that logic private.

Where a task's trace context is kept: with its **import run**, not in a task column. Every task records the run
that created it (``tasks.run_id``), and one webhook request is one import run, so the run's context is exactly the
request's record's context. It is written once per run, before the run's first batch, to the store's key-value
storage (``crossdock:trace``, key ``run:ID``, kept :data:`KEEP_FOR`): no migration, no per-record write, nothing
in the import hot path, and a worker in another process reads it once per run (cached) when it delivers the
run's tasks. A task delivered after :data:`KEEP_FOR` (or imported with tracing off) starts a trace of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from crossdock.tasks import Task

log = logging.getLogger("crossdock.tracing")

#: the storage holding each import run's trace context (a name no ``storages:`` entry can take: it has a colon)
STORAGE = "crossdock:trace"
#: how long a run's context waits for its tasks' deliveries (retries and manual resends included)
KEEP_FOR = 30 * 86400.0
#: run contexts remembered per process, so a worker reads each run's once
_CACHE_SIZE = 4096

_tracer: Tracer | None = None
_provider: Any = None
#: whether :func:`shutdown` flushes and stops the provider (not one that someone else installed globally)
_owned = False
#: per task id, the context of its delivery span while a batch target sends it (AMQP headers, a batch request)
_batch: dict[int, Context] = {}
#: import run id -> the context its tasks' deliveries continue (None: none was stored)
_runs: dict[int, Context | None] = {}


def active() -> bool:
    """Whether spans are being made (after a successful :func:`setup`)."""
    return _tracer is not None


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [] if "none" in names else names or ["otlp"]


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint or an explicit exporter, and no
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Nothing set means off: a process that merely has
    the packages installed sends nothing anywhere."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not _exporter_names(env):
        return False
    return bool(
        env.get("OTEL_TRACES_EXPORTER", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def setup() -> bool:
    """Start tracing when the environment asks for it (see :func:`wanted`); True when spans will be made.

    A global SDK provider that is already installed (``opentelemetry-instrument``) is used as it is, with its own
    exporters; otherwise crossdock makes its own provider with a ``BatchSpanProcessor`` per exporter and keeps it
    private, so libraries that trace on their own (FastAPI's built-in telemetry) do not start tracing every
    dashboard request.
    """
    if _tracer is not None:
        return True
    if not wanted():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* settings ask for traces, but OpenTelemetry is not installed: pip install 'crossdock[otel]'")
        return False
    current = trace.get_tracer_provider()
    if isinstance(current, SdkProvider):
        use(current, owned=False)
        return True
    exporters = [e for e in (_exporter(name) for name in _exporter_names(os.environ)) if e is not None]
    if not exporters:
        return False
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "crossdock"}))
    provider = SdkProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER[_ARG]
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider, owned=True)
    log.info("tracing on: exporting spans with %s", ", ".join(type(e).__name__ for e in exporters))
    return True


def _exporter(name: str) -> SpanExporter | None:
    """The exporter for one ``OTEL_TRACES_EXPORTER`` name, found by the entry points exporters register."""
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        )
        name = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        log.warning("OTEL_TRACES_EXPORTER: no trace exporter %r is installed; its spans are not sent", name)
        return None
    try:
        exporter: SpanExporter = next(iter(found)).load()()
    except Exception as exc:  # a broken exporter must not stop the service
        log.warning("cannot start the trace exporter %r: %s", name, exc)
        return None
    return exporter


def use(provider: TracerProvider, *, owned: bool = False) -> None:
    """Trace with ``provider`` (tests pass one with an in-memory exporter); ``owned`` lets :func:`shutdown` stop it."""
    global _tracer, _provider, _owned
    from crossdock import __version__

    _provider, _owned = provider, owned
    _tracer = provider.get_tracer("crossdock", __version__)


def shutdown() -> None:
    """Flush the spans still queued and stop the exporters: the last spans of ``serve``, ``worker`` and ``run``."""
    global _tracer, _provider, _owned
    provider, owned = _provider, _owned
    _tracer, _provider, _owned = None, None, False
    _runs.clear()
    _batch.clear()
    if provider is None:
        return
    try:
        if owned:
            provider.shutdown()  # flushes the batch processors first
        else:
            provider.force_flush()
    except Exception as exc:
        log.warning("flushing the last spans failed: %s", exc)


@contextlib.contextmanager
def session() -> Iterator[bool]:
    """:func:`setup` for a command's lifetime, and :func:`shutdown` (the flush) however it ends."""
    started = setup()
    try:
        yield started
    finally:
        if started:
            shutdown()


# --- context helpers ------------------------------------------------------------------------------------


def _carrier(context: Context | None = None) -> dict[str, str]:
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def _extract(carrier: Mapping[str, Any]) -> Context:
    from opentelemetry import propagate

    return propagate.extract(carrier)


def _attach(span: Span) -> object:
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(span))


def _detach(token: object) -> None:
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]


def _fail(span: Span, description: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


def inject(headers: MutableMapping[str, str], task: Task | None = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) for the delivery of ``task`` to outgoing headers.

    A single delivery runs inside its span, so the current context is the one; a batch target sends many tasks
    from one call, so their delivery spans are looked up by task id."""
    if _tracer is None:
        return
    from opentelemetry import propagate

    propagate.inject(headers, context=_batch.get(task.id) if task is not None else None)


# --- webhooks -------------------------------------------------------------------------------------------


class ServerSpan:
    """The span of one webhook request; :meth:`answered` records the status it was answered with."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            _fail(self.span, None)


@contextlib.contextmanager
def webhook_span(name: str, path: str, headers: Mapping[str, Any]) -> Iterator[ServerSpan | None]:
    """A SERVER span for ``POST /api/v1/webhooks/{name}``, current while the request is handled, continuing the
    caller's ``traceparent`` (or the server span a global instrumentation already made for the request)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry import trace

    parent = None if trace.get_current_span().get_span_context().is_valid else _extract(headers)
    span = tracer.start_span(
        "POST /api/v1/webhooks/{name}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.route": "/api/v1/webhooks/{name}",
            "url.path": path,
            "crossdock.webhook": name,
        },
    )
    token = _attach(span)
    server = ServerSpan(span)
    try:
        yield server
    except BaseException as exc:
        server.answered(int(getattr(exc, "status_code", 500)))
        raise
    finally:
        _detach(token)
        span.end()


# --- import runs ----------------------------------------------------------------------------------------


class ImportTrace:
    """The span of one import run: current while it runs (so the realtime deliveries it makes nest in it), and
    its context stored for every route run it writes tasks for."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: object) -> None:
        self.span, self.token = span, token

    def end(self, summary: Any) -> None:
        """Record the run's counts (an :class:`~crossdock.engine.importer.ImportSummary`) and end the span."""
        span = self.span
        try:
            routes = [r for r in summary.routes.values() if r.active]
            span.set_attribute("crossdock.records.read", summary.read)
            span.set_attribute("crossdock.run.status", summary.status)
            for key in ("new", "changed", "unchanged", "filtered", "rejected", "superseded"):
                span.set_attribute(f"crossdock.tasks.{key}", sum(getattr(r, key) for r in routes))
            if summary.status != "ok":
                _fail(span, summary.error)
        finally:
            _detach(self.token)
            span.end()


def start_import(store: Any, incoming: str, routes: Sequence[str], run_ids: Sequence[int]) -> ImportTrace | None:
    """Open the span of an import run (under the current context: a webhook request's span) and store its context
    for the run ids, so deliveries in any process join this trace."""
    tracer = _tracer
    if tracer is None:
        return None
    span = tracer.start_span(
        f"import {incoming}",
        attributes={
            "crossdock.part": "incoming",
            "crossdock.incoming": incoming,
            "crossdock.route": routes[0] if len(routes) == 1 else list(routes),
            "crossdock.run.id": list(run_ids),
        },
    )
    token = _attach(span)
    from opentelemetry import context

    here = context.get_current()
    carrier = _carrier(here)
    if carrier:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        for run_id in run_ids:
            _remember(run_id, here)
            try:
                store.storage_put(STORAGE, f"run:{run_id}", carrier, now=now, ttl=KEEP_FOR)
            except Exception as exc:  # a trace must never fail an import
                log.warning("cannot store the trace context of run %s: %s", run_id, exc)
    return ImportTrace(span, token)


def _remember(run_id: int, context: Context | None) -> None:
    if len(_runs) >= _CACHE_SIZE:
        _runs.clear()
    _runs[run_id] = context


# --- export runs and deliveries -------------------------------------------------------------------------


class ExportTrace:
    """The span of one export run. Recorded runs (``crossdock run``, a schedule) get it at once; a worker's pass
    only once it claims something, so an idle worker polling every second makes no spans."""

    __slots__ = ("route", "span", "started_ns")

    def __init__(self, route: str, *, eager: bool) -> None:
        self.route = route
        self.started_ns = time.time_ns()
        self.span: Span | None = None
        if eager:
            self.claimed()

    def claimed(self) -> None:
        if self.span is None and _tracer is not None:
            self.span = _tracer.start_span(
                f"export {self.route}",
                start_time=self.started_ns,
                attributes={"crossdock.part": "outgoing", "crossdock.route": self.route},
            )

    def end(self, summary: Any) -> None:
        """Record an :class:`~crossdock.engine.exporter.ExportSummary` and end the span (if there is one)."""
        span = self.span
        if span is None:
            return
        span.set_attribute("crossdock.run.status", summary.status)
        span.set_attribute("crossdock.tasks.claimed", summary.claimed)
        span.set_attribute("crossdock.tasks.recovered", summary.recovered)
        span.set_attribute("crossdock.tasks.released", summary.released)
        for status, n in summary.by_status.items():
            span.set_attribute(f"crossdock.tasks.{status}", n)
        if summary.held:
            span.set_attribute("crossdock.held", summary.held)
        if summary.status == "failed":
            _fail(span, summary.error)
        span.end()


class Deliveries:
    """Delivery spans for one claimed batch of a route: each continues its task's import trace (or the current
    context), linked to the export run's span."""

    __slots__ = ("links", "parents", "route", "target")

    def __init__(self, route: str, target: str, parents: dict[int, Context | None], run: ExportTrace | None) -> None:
        from opentelemetry.trace import Link

        self.route, self.target, self.parents = route, target, parents
        span = run.span if run is not None else None
        self.links = [Link(span.get_span_context())] if span is not None else None

    def start(self, task: Task, *, batch: bool = False) -> Span:
        """A delivery span for ``task``; in a batch its context is what :func:`inject` gives the target for it."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        assert _tracer is not None
        parent = self.parents.get(task.run_id) if task.run_id is not None else None
        span = _tracer.start_span(
            f"deliver {self.route}",
            context=parent,
            kind=SpanKind.CLIENT,
            links=self.links,
            attributes={
                "crossdock.route": self.route,
                "crossdock.target": self.target,
                "crossdock.task.id": task.id,
                "crossdock.task.identifier": task.identifier or "",
                "crossdock.task.attempt": task.attempts,
            },
        )
        if batch:
            _batch[task.id] = set_span_in_context(span)
        return span

    async def deliver(self, target: Any, task: Task, entity: Any) -> tuple[Any, Span]:
        """``target.deliver`` inside the task's delivery span; the outcome is returned (an exception too), and the
        span stays open for :meth:`end`, which knows the status the task settled in."""
        span = self.start(task)
        token = _attach(span)
        try:
            outcome: Any = await target.deliver(task, entity)
        except Exception as exc:  # the engine words it; the span records it in end()
            outcome = exc
        except BaseException:
            span.end()
            raise
        finally:
            _detach(token)
        return outcome, span

    def abandon(self, spans: Sequence[Span], tasks: Sequence[Task]) -> None:
        """End the spans of a batch whose delivery raised (cancelled at shutdown, or a connector bug)."""
        for span, task in zip(spans, tasks, strict=True):
            _batch.pop(task.id, None)
            _fail(span, "the batch delivery did not finish")
            span.end()

    def end(self, span: Span, task: Task, outcome: Any, status: str) -> None:
        """Record the outcome (HTTP status, error) and the status the task settled in, and end the span."""
        _batch.pop(task.id, None)
        span.set_attribute("crossdock.task.status", status)
        details = getattr(outcome, "details", None)
        code = details.get("status") if isinstance(details, dict) else None
        if not isinstance(code, int):
            code = getattr(outcome, "status_code", None)
        if isinstance(code, int) and code > 0:
            span.set_attribute("http.response.status_code", code)
        if isinstance(outcome, Exception):
            span.set_attribute("error.type", type(outcome).__name__)
            _fail(span, getattr(outcome, "message", None) or str(outcome))
        span.end()


async def deliveries(store: Any, route: str, target: str, tasks: Sequence[Task], run: ExportTrace | None) -> Deliveries:
    """The :class:`Deliveries` of a claimed batch: the stored contexts of the tasks' import runs are read once per
    run and process (in a thread: the store may be across the network)."""
    missing = {t.run_id for t in tasks if t.run_id is not None and t.run_id not in _runs}
    if missing:
        try:
            found = await asyncio.to_thread(_load, store, sorted(missing))
        except Exception as exc:  # no parent then: the deliveries start traces of their own
            log.debug("cannot read the trace contexts of runs %s: %s", sorted(missing), exc)
            found = {}
        for run_id in missing:
            _remember(run_id, found.get(run_id))
    parents = {t.run_id: _runs.get(t.run_id) for t in tasks if t.run_id is not None}
    return Deliveries(route, target, parents, run)


def _load(store: Any, run_ids: list[int]) -> dict[int, Context | None]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    found: dict[int, Context | None] = {}
    for run_id in run_ids:
        carrier = store.storage_get(STORAGE, f"run:{run_id}", now=now)
        found[run_id] = _extract(carrier) if isinstance(carrier, dict) and carrier else None
    return found
