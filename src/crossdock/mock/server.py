"""Run a mock aiohttp app on loopback, from sync code (own thread and loop) or inside a loop.

Tests, benchmarks and ``crossdock demo`` need a real HTTP server on an ephemeral port
that starts in milliseconds and stops cleanly (pytest runs with warnings as errors, so
an unclosed socket or loop fails the suite). :class:`MockServer` owns a background
thread with its own event loop, so sync tests and code that runs its own loop can use
it alike; :class:`AsyncMockServer` runs in the caller's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from crossdock.mock.erp import AuthConfig, Catalogue, Erp
from crossdock.mock.failures import FailureConfig
from crossdock.mock.shop import DEFAULT_COLLECTIONS, ReceivedRequest, Shop

T = TypeVar("T")

#: the only interface the mocks listen on
LOOPBACK = "127.0.0.1"


class AsyncMockServer:
    """Serve an app in the running event loop: ``async with AsyncMockServer(app) as srv: srv.url``."""

    def __init__(self, app: web.Application, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``."""
        if not self.port:
            raise RuntimeError("server is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        # no access log: the shop must keep up with a benchmark doing thousands of requests/s
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class MockServer:
    """Serve an app from a background thread: ``with MockServer(app) as srv: srv.url``.

    The app's handlers run on the server thread; state shared with the caller must be
    guarded (the ERP and shop state objects take a lock).
    """

    def __init__(self, app: web.Application, *, host: str = LOOPBACK, port: int = 0) -> None:
        self._server = AsyncMockServer(app, host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def app(self) -> web.Application:
        return self._server.app

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self._run, name="crossdock-mock-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("mock server did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:
                self._error = exc
                return
            self._loop = loop
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            self._loop = None
            asyncio.set_event_loop(None)
            loop.close()
            self._ready.set()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 10.0) -> T:
        """Run a coroutine on the server's loop and wait for its result (from another thread)."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("server is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread; safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RunningErp:
    """A mock ERP serving from a background thread; see :func:`start_erp`."""

    def __init__(self, erp: Erp, server: MockServer) -> None:
        self.erp = erp
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def catalogue(self) -> Catalogue:
        """Change products here (``update``/``add``/``remove``); the next request sees it."""
        return self.erp.catalogue

    @property
    def auth(self) -> AuthConfig:
        return self.erp.auth

    @property
    def tokens_issued(self) -> int:
        return self.erp.tokens_issued

    def stats(self) -> dict[str, Any]:
        return self.erp.stats()

    def requests_to(self, path: str) -> int:
        return self.erp.requests_to(path)

    def set_failures(self, config: FailureConfig | None = None, **modes: Any) -> FailureConfig:
        """Replace the failure modes (unnamed ones switch off); ``set_failures()`` clears them."""
        return self.erp.failures.set(config, **modes)

    def set_auth(self, auth: AuthConfig | str | Mapping[str, Any] | None) -> None:
        self.erp.set_auth(auth)

    def expire_tokens(self) -> None:
        self.erp.expire_tokens()

    def reset_stats(self) -> None:
        self.erp.reset_stats()

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RunningShop:
    """A mock shop serving from a background thread; see :func:`start_shop`."""

    def __init__(self, shop: Shop, server: MockServer) -> None:
        self.shop = shop
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.shop.received

    @property
    def by_sku(self) -> dict[str, Any]:
        return self.shop.by_sku

    def bodies(self, collection: str) -> dict[str, Any]:
        return self.shop.bodies(collection)

    @property
    def idempotency_counts(self) -> dict[str, int]:
        return self.shop.idempotency_counts

    def duplicates(self) -> dict[str, int]:
        return self.shop.duplicates()

    def stats(self) -> dict[str, Any]:
        return self.shop.stats()

    def set_failures(self, config: FailureConfig | None = None, **modes: Any) -> FailureConfig:
        """Replace the failure modes (unnamed ones switch off); ``set_failures()`` clears them."""
        return self.shop.failures.set(config, **modes)

    def reset(self) -> None:
        self.shop.reset()

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_erp(
    products: int = 1000,
    seed: int = 1,
    auth: AuthConfig | str | Mapping[str, Any] | None = None,
    failures: FailureConfig | Mapping[str, Any] | None = None,
    port: int = 0,
    *,
    host: str = LOOPBACK,
    default_page_size: int = 100,
) -> RunningErp:
    """Start a mock ERP with ``products`` products generated from ``seed``; stop it with ``.stop()``."""
    erp = Erp(Catalogue(products, seed), auth=auth, failures=failures, default_page_size=default_page_size)
    return RunningErp(erp, MockServer(erp.app(), host=host, port=port).start())


def start_shop(
    failures: FailureConfig | Mapping[str, Any] | None = None,
    port: int = 0,
    *,
    host: str = LOOPBACK,
    record_bodies: bool = True,
    collections: Iterable[str] = DEFAULT_COLLECTIONS,
) -> RunningShop:
    """Start a mock shop; stop it with ``.stop()`` (or use it as a context manager)."""
    shop = Shop(failures=failures, record_bodies=record_bodies, collections=collections)
    return RunningShop(shop, MockServer(shop.app(), host=host, port=port).start())
