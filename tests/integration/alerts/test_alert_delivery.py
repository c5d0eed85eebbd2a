"""Alerts end to end in one process: a route whose target refuses records, the leader's check, and the messages
that reach a real SMTP server and a webhook receiver on loopback (#16 must-show 3)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from alert_receivers import HookSink, SmtpSink, free_port, hook_sink, smtp_sink
from crossdock.alerts.service import Alerter, alerter_for
from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.mock import FailureConfig, RunningShop, start_shop
from crossdock.store import Store, open_store

__all__ = ["hook_sink", "smtp_sink"]  # fixtures, re-exported for pytest

HOOK_KEY = "hook-signing-key"


@pytest.fixture
def refusing_shop() -> Iterator[RunningShop]:
    with start_shop(failures=FailureConfig(fail_every=1, fail_status=422)) as shop:
        yield shop


def project_for(tmp_path: Path, shop: RunningShop, alerts: str, records: int = 30) -> tuple[Project, Store]:
    with open(tmp_path / "in.ndjson", "wb") as handle:
        for i in range(records):
            handle.write(orjson.dumps({"sku": f"SKU-{i:04d}", "price": i}) + b"\n")
    (tmp_path / "crossdock.yaml").write_text(
        "database: sqlite:///crossdock.db\n"
        f"connections:\n  shop: {{type: http, base_url: '{shop.url}'}}\n"
        "routes:\n"
        "  products:\n"
        "    incoming: {source: {type: file, path: in.ndjson}}\n"
        "    identifier: sku\n"
        "    outgoing:\n"
        "      target: {type: http, connection: shop, method: PUT, path: '/products/{sku}'}\n"
        "      concurrency: 4\n" + alerts
    )
    project = load_project(tmp_path / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    store.redact = project.redact
    return project, store


def channels(smtp: SmtpSink, hook: HookSink) -> str:
    return (
        "alerts:\n"
        "  dashboard_url: https://crossdock.example.com\n"
        "  channels:\n"
        f"    mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, security: none,"
        " from: crossdock@example.com, to: [ops@example.com, oncall@example.com]}\n"
        f"    hook: {{type: webhook, url: '{hook.url}', hmac_secret: {HOOK_KEY}}}\n"
    )


def now() -> datetime:
    return datetime.now(UTC)


async def check_and_send(alerter: Alerter, at: datetime) -> list[int]:
    ids = await alerter.check(at)
    await alerter.send_due(at)
    return ids


def test_thirty_refusals_within_a_minute_make_one_email_and_one_webhook(
    tmp_path: Path, refusing_shop: RunningShop, smtp_sink: SmtpSink, hook_sink: HookSink
) -> None:
    rules = "  rules:\n    - {name: shop-refusals, event: task_failed, digest: 1m, channels: [mail, hook]}\n"
    project, store = project_for(tmp_path, refusing_shop, channels(smtp_sink, hook_sink) + rules)

    async def scenario() -> None:
        alerter = alerter_for(project, store)
        try:
            start = now()
            assert await check_and_send(alerter, start) == []  # the rule starts looking now
            summary = await run_once(project, store, "products")
            assert summary["by_status"]["failed"] == 30
            assert refusing_shop.stats()["requests"] == 30
            # within the minute nothing goes out; once it has passed, one message per channel
            assert await check_and_send(alerter, now() + timedelta(seconds=20)) == []
            assert len(await check_and_send(alerter, now() + timedelta(seconds=70))) == 2
            # later checks find nothing new
            assert await check_and_send(alerter, now() + timedelta(seconds=140)) == []
        finally:
            await alerter.close()
            store.close()

    asyncio.run(scenario())

    [mail] = smtp_sink.messages
    assert mail["Subject"] == "[crossdock] 30 tasks failed on route products"
    assert mail["To"] == "ops@example.com, oncall@example.com"
    text = mail.get_payload(decode=True).decode()
    assert "Count: 30" in text
    assert "30 x PUT /products/{sku} answered 422" in text, text
    assert "https://crossdock.example.com/tasks?route=products&status=failed" in text

    [(path, headers, body)] = hook_sink.requests
    assert path == "/hook"
    sent = orjson.loads(body)
    assert (sent["event"], sent["route"], sent["count"], sent["rule"]) == (
        "task_failed",
        "products",
        30,
        "shop-refusals",
    )
    assert sent["top_errors"][0]["count"] == 30 and sent["top_errors"][0]["error"].startswith(
        "PUT /products/{sku} answered 422"
    )
    assert sent["top_errors"][0]["url"].startswith("https://crossdock.example.com/tasks/")
    # signed like crossdock's own inbound webhooks: t=<unix seconds>,v1=<HMAC-SHA256 of "<t>.<body>">
    stamp, signature = (part.split("=", 1)[1] for part in headers["X-Crossdock-Signature"].split(","))
    expected = hmac.new(HOOK_KEY.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature == expected


def test_a_channel_that_fails_is_tried_again_and_then_given_up(
    tmp_path: Path, refusing_shop: RunningShop, smtp_sink: SmtpSink
) -> None:
    hook = HookSink(statuses=[503]).start()
    dead_port = free_port()
    try:
        alerts = (
            channels(smtp_sink, hook)
            + f"    dead: {{type: email, host: 127.0.0.1, port: {dead_port}, security: none, from: a@b.c, to: x@y.z}}\n"
            "  max_attempts: 2\n"
            "  rules:\n    - {event: task_failed, digest: 0, channels: [hook, dead]}\n"
        )
        project, store = project_for(tmp_path, refusing_shop, alerts, records=3)

        async def scenario() -> None:
            alerter = alerter_for(project, store)
            try:
                await check_and_send(alerter, now())
                await run_once(project, store, "products")
                at = now() + timedelta(seconds=10)
                await check_and_send(alerter, at)
                by_channel = {a.channel: a for a in store.list_alerts()}
                assert by_channel["hook"].status == "pending" and by_channel["hook"].error == (
                    "HTTP 503 from the receiver: ok"
                )
                assert by_channel["dead"].status == "pending"
                assert "Connection refused" in (by_channel["dead"].error or "")
                # not due yet: nothing is tried
                assert await alerter.send_due(at + timedelta(seconds=5)) == []
                await alerter.send_due(at + timedelta(seconds=11))
                by_channel = {a.channel: a for a in store.list_alerts()}
                assert (by_channel["hook"].status, by_channel["hook"].attempts) == ("sent", 2)
                assert (by_channel["dead"].status, by_channel["dead"].attempts) == ("failed", 2)
            finally:
                await alerter.close()
                store.close()

        asyncio.run(scenario())
        assert len(hook.requests) == 2
        assert hook.bodies()[0] == hook.bodies()[1]
    finally:
        hook.stop()


def test_email_login_and_the_test_message(tmp_path: Path, refusing_shop: RunningShop) -> None:
    smtp = SmtpSink(login=("crossdock", "smtp-pass-word")).start()
    try:
        alerts = (
            "alerts:\n  channels:\n"
            f"    good: {{type: email, host: 127.0.0.1, port: {smtp.port}, security: none, username: crossdock,"
            " password: smtp-pass-word, from: crossdock@example.com, to: ops@example.com}\n"
            f"    wrong: {{type: email, host: 127.0.0.1, port: {smtp.port}, security: none, username: crossdock,"
            " password: not-the-password, from: crossdock@example.com, to: ops@example.com}\n"
            f"    plain: {{type: email, host: 127.0.0.1, port: {smtp.port}, from: crossdock@example.com,"
            " to: ops@example.com}\n"
        )
        project, store = project_for(tmp_path, refusing_shop, alerts, records=0)

        async def scenario() -> Any:
            alerter = alerter_for(project, store)
            try:
                return await alerter.send_test(actor="cli:anna@host")
            finally:
                await alerter.close()

        results = {r.channel: r.error for r in asyncio.run(scenario())}
        assert results["good"] is None
        assert results["wrong"] is not None and "refused the login" in results["wrong"]
        # starttls is the default, and this server offers none: said plainly, never sent in the clear
        assert results["plain"] is not None and "does not offer STARTTLS" in results["plain"]
        [mail] = smtp.messages
        assert mail["Subject"] == "[crossdock] Test message"
        assert {a.channel: a.status for a in store.list_alerts()} == {
            "good": "sent",
            "wrong": "failed",
            "plain": "failed",
        }
        assert "not-the-password" not in orjson.dumps([a.to_json() for a in store.list_alerts()]).decode()
        store.close()
    finally:
        smtp.stop()


def test_a_receiver_that_hangs_is_given_up_on_after_its_timeout_and_tried_again(
    tmp_path: Path, refusing_shop: RunningShop
) -> None:
    hook = HookSink(hang=3.0).start()
    try:
        alerts = (
            f"alerts:\n  channels:\n    slow: {{type: webhook, url: '{hook.url}', timeout: 0.5s}}\n"
            "  rules:\n    - {event: task_failed, digest: 0, channels: [slow]}\n"
        )
        project, store = project_for(tmp_path, refusing_shop, alerts, records=2)

        async def scenario() -> float:
            alerter = alerter_for(project, store)
            try:
                await check_and_send(alerter, now())
                await run_once(project, store, "products")
                started = asyncio.get_running_loop().time()
                await check_and_send(alerter, now() + timedelta(seconds=10))
                return asyncio.get_running_loop().time() - started
            finally:
                await alerter.close()

        took = asyncio.run(scenario())
        [record] = store.list_alerts()
        store.close()
        assert took < 2.5, f"the check waited {took:.1f} s for a receiver that hangs"
        assert (record.status, record.attempts, record.error) == ("pending", 1, "no answer within 0.5 s")
        assert record.next_attempt_at is not None
    finally:
        hook.stop()
