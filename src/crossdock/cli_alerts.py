"""``crossdock alerts list|channels|test``: what crossdock told whom, where it would tell, and whether a channel
works.

Alerts themselves are sent by ``crossdock serve`` (the leader); these commands read what it recorded, and
``alerts test`` sends one message at once, so a new channel can be proven before it is needed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from crossdock.cli_base import (
    DEFAULT_CONFIG,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    WideOpt,
    cli_actor,
    emit_json,
    fail,
    guarded,
    load,
    opened_store,
    out,
    print_rows,
)
from crossdock.errors import UsageError
from crossdock.store.base import ALERT_STATUSES
from crossdock.tasks import iso

alerts_app = typer.Typer(help="Alerts: what was sent to whom, the channels, a test message.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    status: Annotated[
        str | None, typer.Option("--status", help=f"Only messages in this state: {', '.join(ALERT_STATUSES)}.")
    ] = None,
    route: Annotated[str | None, typer.Option("--route", help="Only messages about this route.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many, newest first.")] = 50,
    wide: WideOpt = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Messages crossdock queued, newest first: event, route, channel, whether it went out, and why not."""
    with guarded():
        if status is not None and status not in ALERT_STATUSES:
            raise UsageError(f"--status {status!r} is not one of {', '.join(ALERT_STATUSES)}")
        project = load(config)
        with opened_store(config, db, project=project) as store:
            records = store.list_alerts(limit=limit, status=status, route=route)
    if json_out:
        emit_json([r.to_json() for r in records])
        return
    print_rows(
        ("id", "created", "event", "route", "channel", "status", "tries", "subject / error"),
        [
            (
                str(r.id),
                iso(r.created_at) or "",
                r.event,
                r.route or "",
                r.channel,
                r.status,
                str(r.attempts),
                r.subject + (f" ({r.error})" if r.error else ""),
            )
            for r in records
        ],
        wide=wide,
        empty="no alert was queued yet",
        styles={"status": lambda v: {"sent": f"[green]{v}[/]", "failed": f"[red]{v}[/]"}.get(v, v)},
    )


@alerts_app.command("channels")
def alerts_channels(wide: WideOpt = False, config: ConfigOpt = DEFAULT_CONFIG, json_out: JsonOpt = False) -> None:
    """The configured channels and rules (secrets masked)."""
    with guarded():
        project = load(config)
    alerts = project.loaded.config.alerts
    rules = [
        {
            "name": alerts.rule_key(i),
            "event": rule.event,
            "routes": rule.routes,
            "channels": rule.channels,
            "digest_s": rule.window,
        }
        for i, rule in enumerate(alerts.rules)
    ]
    channels = [
        {"name": name, "type": ch.type, "destination": project.redact(ch.destination())}
        for name, ch in sorted(alerts.channels.items())
    ]
    if json_out:
        emit_json({"channels": channels, "rules": rules})
        return
    print_rows(
        ("channel", "type", "destination"),
        [(c["name"], c["type"], c["destination"]) for c in channels],
        wide=wide,
        empty="no channel is configured under alerts.channels",
    )
    out.print("")
    print_rows(
        ("rule", "event", "routes", "channels", "digest"),
        [
            (
                r["name"],
                r["event"],
                ", ".join(r["routes"] or ["(all)"]),
                ", ".join(r["channels"]),
                f"{r['digest_s']:g} s",
            )
            for r in rules
        ],
        wide=wide,
        empty="no rule is configured under alerts.rules",
    )


@alerts_app.command("test")
def alerts_test(
    channel: Annotated[str | None, typer.Argument(help="The channel's name; every channel when left out.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a test message now; exit 1 with the reason when a channel cannot deliver it."""
    from crossdock.alerts.service import alerter_for

    with guarded():
        project = load(config)
        channels = project.loaded.config.alerts.channels
        if not channels:
            raise UsageError(f"{config} has no alerts.channels to test")
        if channel is not None and channel not in channels:
            raise UsageError(
                f"no alert channel named {channel!r} in {config} (channels: {', '.join(sorted(channels))})"
            )
        with opened_store(config, db, project=project) as store:
            alerter = alerter_for(project, store)

            async def go() -> Any:
                try:
                    return await alerter.send_test(channel, actor=cli_actor())
                finally:
                    await alerter.close()

            results = asyncio.run(go())
    failed = [r for r in results if r.error]
    if json_out:
        emit_json([{"channel": r.channel, "sent": r.error is None, "error": r.error} for r in results])
    else:
        for r in results:
            if r.error:
                out.print(f"{r.channel}: not sent: {r.error}", markup=False)
            else:
                out.print(f"{r.channel}: sent", markup=False)
    if failed:
        if not json_out:
            fail(f"{len(failed)} of {len(results)} channel(s) could not deliver the test message")
        raise typer.Exit(1)
