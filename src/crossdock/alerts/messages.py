"""What an alert says, once, as a structured message; and how each kind of channel shows it.

The message is stored as it was built (``alerts.message``), so ``alerts list``, the API and every channel show
the same facts: the event, the route, counts, the window, the most frequent errors and links to the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from crossdock.tasks import iso

#: errors quoted in one message
TOP_ERRORS = 5
#: characters of one quoted error
ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Links:
    """Addresses of dashboard pages, from the address people reach it at (empty: no links)."""

    base: str | None

    def tasks(self, route: str | None, status: str | None = None) -> str | None:
        if not self.base:
            return None
        query = {k: v for k, v in (("route", route), ("status", status)) if v}
        return f"{self.base.rstrip('/')}/tasks" + (f"?{urlencode(query)}" if query else "")

    def task(self, task_id: int | None) -> str | None:
        return f"{self.base.rstrip('/')}/tasks/{task_id}" if self.base and task_id is not None else None

    def page(self, path: str) -> str | None:
        return f"{self.base.rstrip('/')}{path}" if self.base else None


@dataclass(slots=True)
class Alert:
    """One thing to tell: what happened, where, how often, and where to look."""

    event: str
    rule: str
    route: str | None
    title: str
    lines: list[str] = field(default_factory=list)
    count: int | None = None
    window: tuple[datetime, datetime] | None = None
    top_errors: list[dict[str, Any]] = field(default_factory=list)
    url: str | None = None
    at: datetime | None = None

    def to_message(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "rule": self.rule,
            "route": self.route,
            "title": self.title,
            "text": "\n".join(self.lines),
            "count": self.count,
            "window": {"from": iso(self.window[0]), "to": iso(self.window[1])} if self.window else None,
            "top_errors": self.top_errors,
            "url": self.url,
            "at": iso(self.at),
        }


def clip(text: str | None, limit: int = ERROR_CHARS) -> str:
    text = (text or "(no error text)").strip().replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain_text(message: dict[str, Any]) -> str:
    """The body of an email: the title, the facts, the top errors with their counts and links."""
    out = [message.get("title") or "", ""]
    if message.get("text"):
        out += [message["text"], ""]
    window = message.get("window")
    if window:
        out.append(f"Window: {window['from']} to {window['to']}")
    if message.get("count") is not None:
        out.append(f"Count: {message['count']}")
    errors = message.get("top_errors") or []
    if errors:
        out += ["", "Most frequent errors:"]
        for e in errors:
            out.append(f"  {e['count']} x {e['error']}")
            if e.get("url"):
                out.append(f"     latest: {e['url']}")
    if message.get("url"):
        out += ["", f"Open in crossdock: {message['url']}"]
    out += ["", f"-- crossdock alert rule {message.get('rule')!s} ({message.get('event')})"]
    return "\n".join(out).strip() + "\n"


def chat_payload(message: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` for notifications and clients without blocks, blocks for the rest."""
    title = message.get("title") or "crossdock alert"
    link = message.get("url")
    headline = f"*<{link}|{_escape(title)}>*" if link else f"*{_escape(title)}*"
    details: list[str] = []
    if message.get("text"):
        details.append(_escape(message["text"]))
    for e in message.get("top_errors") or []:
        error = f"`{_escape(e['error'])}`"
        details.append(f"• {e['count']} × {error}" + (f" (<{e['url']}|latest>)" if e.get("url") else ""))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)[:2900]}})
    context = f"rule {message.get('rule')} · {message.get('event')}"
    if message.get("window"):
        context += f" · {message['window']['from']} – {message['window']['to']}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(context)}]})
    return {"text": title, "blocks": blocks}


def _escape(text: str) -> str:
    """Slack's mrkdwn treats these three as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
