"""The alert loop of ``serve``: on the leader only, check the rules, queue what they found, send what is due.

Messages are queued in the store before anything is sent, one per channel, so a channel that is down is tried
again (with growing pauses, ``alerts.max_attempts`` times) without holding up the others, and a restart loses
nothing. Two servers never both send: only the process holding the scheduler lock checks and sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from crossdock.alerts.channels import Channel, ChannelError, send
from crossdock.alerts.messages import Alert, Links
from crossdock.alerts.rules import Rules
from crossdock.config.models import AlertsConfig
from crossdock.engine.project import Project
from crossdock.errors import StoreUnavailable, describe_error
from crossdock.store.base import AlertRecord, NewAlert, Store

log = logging.getLogger("crossdock.alerts")

#: pauses before the 2nd, 3rd, ... try of a message (the last one repeats)
RETRY_AFTER = (10.0, 30.0, 120.0, 600.0, 1800.0)
#: sent and failed messages are kept this long
KEEP = timedelta(days=90)
PRUNE_EVERY = timedelta(hours=6)
SUBJECT_PREFIX = "[crossdock] "


@dataclass(frozen=True, slots=True)
class TestResult:
    channel: str
    error: str | None


class Alerter:
    """Checks and sends for one project; ``run`` is the loop, the rest can be called on its own (tests, CLI)."""

    def __init__(
        self,
        config: AlertsConfig,
        store: Store,
        *,
        routes: list[str],
        links: Links,
        redact: Callable[[str], str],
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        circuit_routes: dict[str, list[str]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.redact = redact
        self.is_leader = is_leader
        self.clock = clock
        self.rules = Rules(config, store, routes, links, redact, circuit_routes)
        self._session: aiohttp.ClientSession | None = None
        self._pruned_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.rules)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: every ``check_every`` seconds, if this process leads, check and send."""
        try:
            while not stop.is_set():
                if self.is_leader():
                    try:
                        await self.check()
                        await self.send_due()
                    except StoreUnavailable as exc:
                        log.debug("alerts wait for the database: %s", exc.message)
                    except Exception:  # a bug in one check must not end alerting for good
                        log.exception("alert check failed; trying again in %g s", self.config.check_every)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.check_every)
        finally:
            await self.close()

    async def check(self, now: datetime | None = None) -> list[int]:
        """Look for something to tell; queue one message per alert and channel. Returns the queued ids."""
        at = now or self.clock()

        def work() -> list[int]:
            found, states = self.rules.check(at)
            queued = [
                self._queued(self.config.rules[f.rule].channels[i], f.alert)
                for f in found
                for i in range(len(self.config.rules[f.rule].channels))
            ]
            for f in found:
                log.warning("alert %s: %s", f.alert.rule, f.alert.title)
            return self.store.add_alerts(queued, now=at, states=states)

        ids = await asyncio.to_thread(work)
        if self._pruned_at is None or at - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = at
            await asyncio.to_thread(self.store.prune_alerts, before=at - KEEP)
        return ids

    def _queued(self, channel: str, alert: Alert) -> NewAlert:
        return NewAlert(
            rule=alert.rule,
            event=alert.event,
            route=alert.route,
            channel=channel,
            subject=SUBJECT_PREFIX + alert.title,
            message=alert.to_message(),
        )

    async def send_due(self, now: datetime | None = None) -> list[AlertRecord]:
        """Try every message that is due, all channels at once; record each outcome. Returns what was tried."""
        at = now or self.clock()
        due = await asyncio.to_thread(self.store.due_alerts, now=at)
        if due:
            await asyncio.gather(*(self._deliver(record, at) for record in due))
        return due

    async def _deliver(self, record: AlertRecord, at: datetime) -> None:
        channel = self.config.channels.get(record.channel)
        if channel is None:
            error: str | None = f"channel {record.channel!r} is no longer configured under alerts.channels"
        else:
            error = await self._send(channel, record.subject, record.message)
        retry_at = None
        if error is not None:
            tries = record.attempts + 1
            if channel is not None and tries < self.config.max_attempts:
                retry_at = at + timedelta(seconds=RETRY_AFTER[min(tries - 1, len(RETRY_AFTER) - 1)])
                log.warning(
                    "alert %d to %s not sent (try %d of %d, again at %s): %s",
                    record.id,
                    record.channel,
                    tries,
                    self.config.max_attempts,
                    retry_at.isoformat(timespec="seconds"),
                    error,
                )
            else:
                log.error("alert %d to %s given up after %d tries: %s", record.id, record.channel, tries, error)
        await asyncio.to_thread(self.store.alert_attempted, record.id, now=at, error=error, retry_at=retry_at)

    async def send_test(self, channel: str | None = None, *, actor: str = "cli") -> list[TestResult]:
        """Send a test message to ``channel`` (every channel when None) now, recorded like any alert."""
        names = [channel] if channel else sorted(self.config.channels)
        at = self.clock()
        alert = Alert(
            event="test",
            rule="test",
            route=None,
            title="Test message",
            lines=[f"A test of crossdock's alert channel, sent by {actor}. If you read this, the channel works."],
            url=self.rules.links.page("/alerts"),
            at=at,
        )
        ids = await asyncio.to_thread(self.store.add_alerts, [self._queued(n, alert) for n in names], now=at)
        results: list[TestResult] = []
        for alert_id, name in zip(ids, names, strict=True):
            error = await self._send(self.config.channels[name], SUBJECT_PREFIX + alert.title, alert.to_message())
            await asyncio.to_thread(self.store.alert_attempted, alert_id, now=self.clock(), error=error)
            results.append(TestResult(name, error))
        failed = [r.channel for r in results if r.error]
        await asyncio.to_thread(
            self.store.record_audit,
            actor,
            "alerts.test",
            {"channels": names},
            changed=len(results) - len(failed),
            detail=f"not sent to {', '.join(failed)}" if failed else None,
            now=self.clock(),
        )
        return results

    async def _send(self, channel: Channel, subject: str, message: dict[str, Any]) -> str | None:
        """Send one message; the reason it was not delivered (secrets masked), or None."""
        try:
            await send(channel, subject, message, self._client())
        except ChannelError as exc:
            return self.redact(exc.reason)
        except Exception as exc:  # a sender bug is reported like a refusal, never lost
            log.exception("alert to a %s channel failed unexpectedly", channel.type)
            return self.redact(describe_error(exc))
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def alerter_for(
    project: Project,
    store: Store,
    *,
    serve_url: str | None = None,
    is_leader: Callable[[], bool] = lambda: True,
) -> Alerter:
    """The project's alerter; links point at ``alerts.dashboard_url``, else at ``serve_url`` (serve's address)."""
    config = project.loaded.config.alerts
    circuit_routes: dict[str, list[str]] = {}
    for name, route in sorted(project.routes.items()):
        if route.circuit is not None:
            circuit_routes.setdefault(route.circuit_key, []).append(name)
    return Alerter(
        config,
        store,
        routes=sorted(project.routes),
        links=Links(config.dashboard_url or serve_url),
        redact=project.redact,
        is_leader=is_leader,
        circuit_routes=circuit_routes,
    )
