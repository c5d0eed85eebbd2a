"""The long-running processes behind ``crossdock serve`` and ``crossdock worker``.

``serve`` = scheduler (leader only) + workers + the web app when it is installed, in one event loop.
``worker`` = workers only, for scale-out. Both stop on SIGTERM or SIGINT: claiming stops at once,
in-flight deliveries get the grace period, unstarted claims are released, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crossdock.alerts.service import alerter_for
from crossdock.engine.exporter import Exporter
from crossdock.engine.project import Project, effective_active
from crossdock.engine.run_liveness import abandon_dead_runs
from crossdock.engine.scheduler import EngineJobs, Scheduler
from crossdock.engine.worker import Worker
from crossdock.errors import StoreUnavailable
from crossdock.store import Store

log = logging.getLogger("crossdock.service")

#: seconds between scheduler ticks; tests lower it together with a 6-field (seconds) cron
TICK_ENV = "CROSSDOCK_SCHEDULER_TICK"


@dataclass
class ServiceOptions:
    concurrency: int | None = None
    grace: float = 30.0
    host: str = "127.0.0.1"
    port: int = 8080


def redact_url(url: str) -> str:
    """The database URL with its password masked, for banners and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _tick() -> float:
    raw = os.environ.get(TICK_ENV)
    return max(float(raw), 0.01) if raw else 1.0


def _announce(project: Project, store: Store, url: str, what: str, worker: Worker, scheduler: Scheduler | None) -> None:
    try:
        abandon_dead_runs(store)
        states = store.route_states()
    except StoreUnavailable:
        states = {}  # the outage is logged by the store's health; the loops wait it out
    location = getattr(store, "path", None)
    location = str(Path(location).resolve()) if isinstance(location, str) and location != ":memory:" else None
    where = f"{redact_url(url)} ({store.backend}{f', file {location}' if location else ''})"
    log.info(
        "%s: database %s",
        what,
        where,
        extra={"data": {"database": redact_url(url), "backend": store.backend}},
    )
    slots = worker.slots.size if worker.slots is not None else None
    for route in worker.routes:
        active = effective_active(route, states)
        log.info(
            "deliver %s continuously (priority %s, concurrency %d%s)",
            route.name,
            route.config.priority,
            route.config.outgoing.concurrency,
            "" if active else ", inactive now",
            extra={"data": {"route": route.name, "mode": "continuous", "active": active}},
        )
    if not worker.routes:
        log.info("no route is delivered continuously (all have an outgoing schedule)")
    log.info("global concurrency: %s", slots if slots is not None else "per route only")
    if scheduler is not None:
        for part in scheduler.parts:
            log.info(
                "schedule %s: %s",
                part.label,
                part.schedule,
                extra={"data": {"part": part.kind, "name": part.name, "schedule": part.schedule}},
            )


@contextlib.contextmanager
def on_stop_signals(stop: Callable[[str], None], *, grace: float | None = None) -> Iterator[None]:
    """Call ``stop(signal name)`` on the first SIGTERM or SIGINT; restore the defaults afterwards.

    With ``grace``, the task running this block is cancelled ``grace`` seconds after the first signal, or at once on a
    second one, for callers that have no grace period of their own (``crossdock run``).
    """
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    signals = (signal.SIGTERM, signal.SIGINT)
    received: list[str] = []
    timers: list[asyncio.TimerHandle] = []

    def handle(sig: signal.Signals) -> None:
        if received and grace is not None and current is not None:
            log.warning("%s received again: cancelling what is still in flight", sig.name)
            current.cancel()
            return
        if received:
            return
        received.append(sig.name)
        log.info("%s received: stopping", sig.name)
        stop(sig.name)
        if grace is not None and current is not None:
            timers.append(loop.call_later(grace, current.cancel))

    for sig in signals:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)


async def run_worker(project: Project, store: Store, url: str, options: ServiceOptions) -> int:
    """``crossdock worker``: deliver until a signal, then stop within the grace period."""
    worker = Worker(project, store, concurrency=options.concurrency)
    _announce(project, store, url, "worker", worker, None)
    try:
        with on_stop_signals(lambda _sig: worker.stop()):
            report = await worker.run(grace=options.grace)
    finally:
        await worker.exporter.close()
    log.info(
        "worker stopped: %d task(s) settled, %d released",
        report.delivered,
        report.released,
        extra={"data": {"by_status": report.by_status, "released": report.released}},
    )
    return 0


async def run_serve(project: Project, store: Store, url: str, options: ServiceOptions) -> int:
    """``crossdock serve``: scheduler, workers and (when installed) the web app in one event loop."""
    exporter = Exporter(project, store, wait_forever=True)
    worker = Worker(project, store, concurrency=options.concurrency, exporter=exporter)
    scheduler = Scheduler(project, store, EngineJobs(project, store, exporter))
    stop = asyncio.Event()
    web = _web_task(project, store, options.host, options.port)
    _announce(project, store, url, "serve", worker, scheduler)
    if web is None:
        log.info("web app not installed in this build: running scheduler and workers only (no API, no dashboard)")
    else:
        log.info("web app on http://%s:%d", options.host, options.port)

    def request_stop() -> None:
        stop.set()
        worker.stop()
        if web is not None:
            web[1]()

    jobs: list[asyncio.Task[Any]] = [
        asyncio.create_task(scheduler.run(stop, tick=_tick(), grace=options.grace), name="scheduler"),
        asyncio.create_task(worker.run(grace=options.grace), name="worker"),
    ]
    # links in messages need an address people can open: alerts.dashboard_url, else this server's (unless the
    # port is chosen by the system)
    serve_url = f"http://{options.host}:{options.port}" if options.port else None
    alerter = alerter_for(project, store, serve_url=serve_url, is_leader=lambda: scheduler.is_leader)
    if alerter.enabled:
        # alerts go with the scheduler's lock: one sender however many servers run
        jobs.append(asyncio.create_task(alerter.run(stop), name="alerts"))
    if web is not None:
        jobs.append(asyncio.create_task(web[0], name="web"))
    try:
        with on_stop_signals(lambda _sig: request_stop()):
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            failed = [j for j in done if not j.cancelled() and j.exception() is not None]
            if failed:
                request_stop()
                await asyncio.gather(*jobs, return_exceptions=True)
                for job in failed:
                    log.error("%s stopped with an error", job.get_name(), exc_info=job.exception())
                return 1
    finally:
        await exporter.close()
    log.info("serve stopped")
    return 0


def _web_task(
    project: Project, store: Store, host: str, port: int
) -> tuple[Coroutine[Any, Any, None], Callable[[], None]] | None:
    """The web app served by uvicorn in this event loop, and how to stop it; None when not installed.

    The seam to the web branch: ``crossdock.web.app.create_app(project, store)``. uvicorn's own signal
    handling is switched off, because the service owns SIGTERM/SIGINT and must exit 0 after its grace.
    """
    try:
        web_app = importlib.import_module("crossdock.web.app")
        web_server = importlib.import_module("crossdock.web.server")
    except ImportError:
        return None
    import uvicorn

    token = web_server.first_start_token(store)
    if token is not None:
        # printed, not logged: the one-time link must not end up in log files
        print(
            "\nNo API token existed, so an admin token was created. Open this link once to log in\n"
            "(it is shown only now; create more with `crossdock token create`):\n\n"
            f"    {web_server.login_url(host, port, token)}\n",
            flush=True,
        )
    log_filter = web_server.RedactingFilter(project.redact)
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(log_filter)

    class EmbeddedServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = web_app.create_app(project, store)
    server = EmbeddedServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))

    def stop() -> None:
        server.should_exit = True

    return server.serve(), stop
