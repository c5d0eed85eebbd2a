"""Read models and formatting for the dashboard: numbers, times, the throughput chart, the monitor panels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from crossdock.store.base import ErrorGroup
from crossdock.tasks import ALL_STATUSES, iso
from crossdock.web.context import WebContext

STATUS_NAMES = [s.value for s in ALL_STATUSES]
#: chart series: kind in the throughput counters → (label, CSS class)
SERIES = (
    ("imported", "imported", "s-imported"),
    ("finished", "finished", "s-finished"),
    ("failed", "failed", "s-failed"),
)


def num(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def compact(value: int) -> str:
    """1,190,000 → 1.19M: badges stay narrow at any volume."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (10_000, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:,}"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "–"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{round(seconds / 60)} min"
    elif seconds < 86400 * 2:
        text = f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def exact(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def truncate(text: str | None, size: int = 90) -> str:
    if not text:
        return ""
    return text if len(text) <= size else text[: size - 1] + "…"


@dataclass
class Chart:
    svg: Markup
    totals: dict[str, int]
    hours: int


def throughput_chart(ctx: WebContext, *, hours: int = 6, route: str | None = None) -> Chart:
    """An inline SVG chart of imported / finished / failed per minute: no JavaScript, no chart library."""
    now = ctx.now()
    since = now - timedelta(hours=hours)
    data = ctx.store.throughput(since=since, route=route)
    first = int(since.timestamp() // 60)
    minutes = hours * 60
    width, height, pad = 720, 140, 4
    peak = max([1, *(kinds.get(k, 0) for kinds in data.values() for k, _l, _c in SERIES)])
    totals = {k: sum(kinds.get(k, 0) for kinds in data.values()) for k, _l, _c in SERIES}
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 18}" role="img" preserveAspectRatio="none" '
        f'aria-label="throughput per minute, last {hours} hours">'
    ]
    for frac in (0.5, 1.0):
        y = pad + (height - 2 * pad) * (1 - frac)
        parts.append(f'<line class="grid" x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="2" y="{y + 11:.1f}">{round(peak * frac):,}/min</text>')
    for kind, label, css in SERIES:
        points = []
        for i in range(minutes + 1):
            n = data.get(first + i, {}).get(kind, 0)
            x = i * width / minutes
            y = pad + (height - 2 * pad) * (1 - n / peak)
            points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<polyline class="{css}" points="{" ".join(points)}"><title>{label}</title></polyline>')
    for h in range(hours + 1):
        x = min(h * width / hours, width - 30)
        tick = (since + timedelta(hours=h)).strftime("%H:%M")
        parts.append(f'<text class="axis" x="{x:.1f}" y="{height + 14}">{tick}</text>')
    parts.append("</svg>")
    return Chart(Markup("".join(parts)), totals, hours)


@dataclass
class OldestWork:
    route: str
    status: str
    since: datetime


def oldest_work(ctx: WebContext) -> OldestWork | None:
    best: OldestWork | None = None
    for route, by_status in ctx.store.oldest_due().items():
        for status, at in by_status.items():
            if status == "retry" and at > ctx.now():
                continue  # scheduled for later: not waiting yet
            if best is None or at < best.since:
                best = OldestWork(route, status, at)
    return best


def monitor_counts(ctx: WebContext) -> dict[str, Any]:
    """The live part of the monitor: totals and per-route counts, from the counters."""
    stats = ctx.store.stats()
    routes = []
    for name in sorted(set(ctx.project.routes) | set(stats.by_route)):
        counts = {s: stats.by_route.get(name, {}).get(s, 0) for s in STATUS_NAMES}
        last = ctx.store.list_runs(name, 1)
        routes.append(
            {
                "name": name,
                "counts": counts,
                "configured": name in ctx.project.routes,
                "active": ctx.route_active(name) if name in ctx.project.routes else False,
                "last_run": last[0] if last else None,
            }
        )
    return {"total": stats.total, "by_status": stats.by_status, "routes": routes, "updated": ctx.now()}


def top_errors(ctx: WebContext, hours: int = 24) -> list[ErrorGroup]:
    return ctx.store.top_errors(since=ctx.now() - timedelta(hours=hours), limit=10)


def run_text(part: str, summary: dict[str, Any]) -> str:
    """One line of a run summary, as the Routes page and the monitor show it."""
    if not summary:
        return ""
    if part == "incoming":
        keys = ("read", "new", "unchanged", "filtered", "rejected", "superseded")
        return "  ".join(f"{k} {summary.get(k, 0):,}" for k in keys)
    by = summary.get("by_status", {})
    text = f"claimed {summary.get('claimed', 0):,}  " + "  ".join(f"{k} {v:,}" for k, v in sorted(by.items()))
    held = summary.get("held")
    return f"{text}  ({held})" if held else text


def duration(started: datetime, finished: datetime | None) -> str:
    if finished is None:
        return "running"
    seconds = (finished - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def pretty_json(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def badge(status: str) -> Markup:
    s = escape(status)
    return Markup(f'<span class="badge st-{s}">{s}</span>')


def time_tag(value: datetime | None) -> Markup:
    """Relative time with the exact UTC time on hover."""
    if value is None:
        return Markup('<span class="muted">–</span>')
    return Markup(f'<time datetime="{escape(iso(value))}" title="{escape(exact(value))}">{escape(ago(value))}</time>')
