"""Alerts through the real CLI: ``crossdock serve`` (the leader) notices failures that another process
delivered, sends one message per route and window by email and webhook, reports a paused route; ``alerts test``
proves a channel and fails with the reason; ``alerts list`` and ``alerts channels`` show what was sent and where."""

from __future__ import annotations

import time
from typing import Any

import pytest

from alert_receivers import HookSink, SmtpSink, free_port, hook_sink, smtp_sink

__all__ = ["hook_sink", "smtp_sink"]

pytestmark = pytest.mark.slow

DIGEST = 2.0


def alerts_yaml(smtp: SmtpSink, hook: HookSink, rules: str, dead_port: int | None = None) -> str:
    dead = (
        f"    dead: {{type: email, host: 127.0.0.1, port: {dead_port}, security: none, from: a@b.example,"
        " to: ops@b.example}\n"
        if dead_port
        else ""
    )
    return (
        "alerts:\n"
        "  check_every: 0.2s\n"
        "  channels:\n"
        f"    mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, security: none, from: crossdock@b.example,"
        " to: ops@b.example}\n"
        f"    hook: {{type: webhook, url: '{hook.url}'}}\n"
        "    chat: {type: slack, url: 'https://hooks.slack.example/services/T1/B2/chat-secret-path'}\n"
        f"{dead}"
        f"  rules:\n{rules}"
    )


def test_serve_sends_one_digest_per_window_and_reports_a_paused_route(
    project: Any, shop_factory: Any, smtp_sink: SmtpSink, hook_sink: HookSink
) -> None:
    shop_factory(fail_every=1, fail_status=422)
    project.write_ndjson("data/in.ndjson", project.products(30))
    project.write_ndjson("data/other.ndjson", project.products(20, start=1000))
    routes = (
        project.route_yaml()
        + project.route_yaml(
            "p", source="{type: file, path: data/other.ndjson}", extra="    pause_after: {failed: 10}\n"
        ).split("routes:\n", 1)[1]
    )
    rules = (
        f"    - {{event: task_failed, routes: [r], digest: {DIGEST}s, channels: [mail, hook]}}\n"
        "    - {event: route_paused, channels: [hook]}\n"
    )
    project.write_config(routes + alerts_yaml(smtp_sink, hook_sink, rules))
    serve = project.popen("serve", "--port", str(free_port()))
    try:
        time.sleep(1.5)  # serve takes the lead and starts looking
        # the failures are delivered by this separate process; the leader counts them from the database
        assert project.run("r")["by_status"]["failed"] == 30
        assert project.run("p")["outgoing"]["paused"].startswith("paused after 10 consecutive failed tasks")
        assert project.wait_for(lambda: len(hook_sink.requests) >= 2 and len(smtp_sink.messages) >= 1, timeout=30), (
            hook_sink.bodies(),
            len(smtp_sink.messages),
        )
        time.sleep(DIGEST + 2)  # nothing more for the same window
    finally:
        serve.terminate()
        output = serve.communicate(timeout=60)
    assert serve.returncode == 0, output
    by_event = {b["event"]: b for b in hook_sink.bodies()}
    assert sorted(b["event"] for b in hook_sink.bodies()) == ["route_paused", "task_failed"], hook_sink.bodies()
    assert (by_event["task_failed"]["route"], by_event["task_failed"]["count"]) == ("r", 30)
    assert by_event["task_failed"]["top_errors"][0]["count"] == 30
    assert by_event["route_paused"]["route"] == "p"
    assert "paused after 10 consecutive failed tasks" in by_event["route_paused"]["text"]
    [mail] = smtp_sink.messages
    assert mail["Subject"] == "[crossdock] 30 tasks failed on route r"

    listed = project.cli("alerts", "list", "--json").json
    assert sorted((a["event"], a["channel"], a["status"]) for a in listed) == [
        ("route_paused", "hook", "sent"),
        ("task_failed", "hook", "sent"),
        ("task_failed", "mail", "sent"),
    ]


def test_alerts_test_proves_a_channel_or_exits_1_with_the_reason(
    project: Any, smtp_sink: SmtpSink, hook_sink: HookSink
) -> None:
    project.write_ndjson("data/in.ndjson", [])
    dead_port = free_port()
    rules = "    - {event: task_failed, channels: [mail]}\n"
    project.write_config(
        project.route_yaml(target="{type: noop}", connections=False)
        + alerts_yaml(smtp_sink, hook_sink, rules, dead_port=dead_port)
    )
    ok = project.cli("alerts", "test", "mail")
    assert "mail: sent" in ok.stdout
    assert smtp_sink.messages[0]["Subject"] == "[crossdock] Test message"
    bad = project.cli("alerts", "test", "dead", expect=1)
    assert f"cannot send through 127.0.0.1:{dead_port}" in bad.stdout
    assert "could not deliver the test message" in bad.stderr
    as_json = project.cli("alerts", "test", "dead", "--json", expect=1).json
    assert as_json[0]["sent"] is False and "Connection refused" in as_json[0]["error"]
    assert project.cli("alerts", "test", "nope", expect=2).stderr.startswith("usage error: no alert channel named")

    listed = project.cli("alerts", "list", "--json", "--status", "failed").json
    assert [a["channel"] for a in listed] == ["dead", "dead"]
    channels = project.cli("alerts", "channels", "--json")
    assert "chat-secret-path" not in channels.stdout
    assert {c["name"]: c["type"] for c in channels.json["channels"]} == {
        "chat": "slack",
        "dead": "email",
        "hook": "webhook",
        "mail": "email",
    }
