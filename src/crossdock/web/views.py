"""Read models and formatting for the dashboard: numbers, times, the throughput chart, the monitor panels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from crossdock.redact import MASK
from crossdock.store.base import ErrorGroup
from crossdock.tasks import ALL_STATUSES, iso
from crossdock.web.context import WebContext

STATUS_NAMES = [s.value for s in ALL_STATUSES]
#: chart series: kind in the throughput counters → (label, CSS class), in drawing order: imported comes last, so
#: its dashed line lies on top of the finished line, which follows it closely when deliveries keep up
SERIES = (
    ("finished", "finished", "s-finished"),
    ("failed", "failed", "s-failed"),
    ("imported", "imported", "s-imported"),
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


#: the statuses that are work still to do, as "Oldest waiting work" counts them
WAITING_WORK = ("new", "retry", "waiting")


@dataclass
class OldestWork:
    route: str
    status: str
    since: datetime
    #: how many tasks of that route are in that status (from the counters)
    count: int = 0
    #: every route's tasks in new, retry and waiting, by status (from the counters)
    totals: dict[str, int] | None = None


def oldest_work(ctx: WebContext) -> OldestWork | None:
    best: OldestWork | None = None
    for route, by_status in ctx.store.oldest_due().items():
        for status, at in by_status.items():
            if status == "retry" and at > ctx.now():
                continue  # scheduled for later: not waiting yet
            if best is None or at < best.since:
                best = OldestWork(route, status, at)
    if best is not None:
        stats = ctx.store.stats()
        best.count = stats.by_route.get(best.route, {}).get(best.status, 0)
        best.totals = {s: stats.by_status.get(s, 0) for s in WAITING_WORK}
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


# --- schedules ------------------------------------------------------------------------------------

_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_NAMES = {name[:3].lower(): str(i) for i, name in enumerate(_DAYS[:7])}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _numbers(field: str, low: int, high: int) -> list[int] | None:
    """``5`` or ``1,15,30`` as numbers in range; None for anything else (ranges, steps, names)."""
    parts = field.split(",")
    if not all(p.isdigit() for p in parts):
        return None
    values = [int(p) for p in parts]
    return values if all(low <= v <= high for v in values) else None


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _days_of_week(field: str) -> str | None:
    field = ",".join(_DAY_NAMES.get(p.lower(), p) for p in field.split(","))
    if field in ("1-5", "mon-fri"):
        return "on weekdays"
    if field in ("0,6", "6,0", "6-7", "sat,sun"):
        return "on weekends"
    days = _numbers(field, 0, 7)
    if days is None:
        return None
    return "on " + _join([_DAYS[d] + "s" for d in days])


def humanize_cron(expression: str | None) -> str:
    """Common cron shapes in words ("every minute", "at 02:00 every day"); anything else stays as written.

    Schedules fire in UTC, as the scheduler reads them."""
    if not expression:
        return "on demand"
    text = _CRON_ALIASES.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        return expression
    minute, hour, dom, month, dow = fields
    if dom == "*" and month == "*" and dow == "*":
        if minute == "*" and hour == "*":
            return "every minute"
        if minute.startswith("*/") and minute[2:].isdigit() and hour == "*":
            n = int(minute[2:])
            return "every minute" if n == 1 else f"every {n} minutes"
        minutes = _numbers(minute, 0, 59)
        if minutes is not None and hour == "*":
            if minutes == [0]:
                return "every hour"
            return "every hour at " + _join([f":{m:02d}" for m in minutes])
        if minutes is not None and len(minutes) == 1 and hour.startswith("*/") and hour[2:].isdigit():
            n = int(hour[2:])
            return ("every hour" if n == 1 else f"every {n} hours") + f" at :{minutes[0]:02d}"
    minutes = _numbers(minute, 0, 59)
    hours = _numbers(hour, 0, 23)
    if minutes is None or hours is None or len(minutes) * len(hours) > 6 or month != "*":
        return expression
    at = "at " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes]) + " UTC"
    if dom == "*" and dow == "*":
        return f"{at} every day"
    if dom == "*":
        days = _days_of_week(dow)
        return f"{at} {days}" if days else expression
    if dow == "*":
        dates = _numbers(dom, 1, 31)
        if dates is not None:
            return f"{at} on the " + _join([_ordinal(d) for d in dates]) + " of every month"
    return expression


def next_fires(expression: str | None, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times of a cron schedule (UTC), for the route page."""
    if not expression:
        return []
    from croniter import croniter

    it = croniter(expression, after)
    return [it.get_next(datetime) for _ in range(count)]


def first_fire_at_or_after(expression: str, moment: datetime) -> datetime:
    """The first time the cron fires at or after ``moment``: when a scheduled outgoing run picks up due work."""
    from croniter import croniter

    fire: datetime = croniter(expression, moment - timedelta(microseconds=1)).get_next(datetime)
    return fire


# --- runs -----------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """How a run is shown: a short label and its colour class, a run with failed tasks never a green "ok"."""

    label: str
    css: str
    title: str = ""


def run_outcome(part: str, status: str, summary: dict[str, Any], error: str | None = None) -> RunOutcome:
    if status == "running":
        return RunOutcome("running", "run-running")
    if status != "ok":
        return RunOutcome(status, "run-failed", error or "")
    summary = summary or {}
    if part == "outgoing":
        by = summary.get("by_status") or {}
        failed, retry = int(by.get("failed", 0)), int(by.get("retry", 0))
        if failed:
            extra = f", {retry:,} to retry" if retry else ""
            return RunOutcome(f"{failed:,} failed", "run-failed", f"the run ended, {failed:,} task(s) failed{extra}")
        if retry:
            return RunOutcome(f"{retry:,} to retry", "run-warn", f"the run ended, {retry:,} task(s) will be retried")
    else:
        rejected = int(summary.get("rejected", 0) or 0)
        if rejected:
            return RunOutcome(f"{rejected:,} rejected", "run-warn", f"{rejected:,} record(s) were refused")
    if summary.get("held"):
        return RunOutcome("held", "run-held", str(summary["held"]))
    return RunOutcome("ok", "run-ok")


def outcome_of(run: Any) -> RunOutcome:
    """:func:`run_outcome` of a stored run."""
    return run_outcome(run.part, run.status, run.summary, run.error)


# --- task texts -----------------------------------------------------------------------------------

#: statuses whose ``error`` is an error (red); a skipped task's is the reason it was skipped
ERROR_STATUSES = frozenset({"failed", "retry", "rejected"})


# --- a route's configuration, read-only -----------------------------------------------------------


def _masked(value: Any, redact: Callable[[str], str], key: str = "", in_auth: bool = False) -> Any:
    """Every value under a secret-looking key (and every non-public string of an ``auth:`` block) as ``***``;
    every other string through the project's redactor, keys included."""
    from crossdock.config.yamlsource import _AUTH_PUBLIC, _SECRET_KEY

    if isinstance(value, dict):
        return {
            (redact(k) if isinstance(k, str) else k): _masked(v, redact, str(k), key == "auth")
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_masked(v, redact, key, in_auth) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key) or (in_auth and key not in _AUTH_PUBLIC):
            return MASK
        return redact(value)
    return value


def route_config_text(ctx: WebContext, name: str) -> str:
    """The route's config as YAML, with its shared incoming and the connections it uses, secrets masked."""
    import yaml

    config = ctx.project.loaded.config
    route = config.routes[name]
    data: dict[str, Any] = {"routes": {name: route.model_dump(mode="json", by_alias=True, exclude_unset=True)}}
    specs = [route.outgoing.target]
    if isinstance(route.incoming, str):
        incoming = config.incomings.get(route.incoming)
        if incoming is not None:
            data["incomings"] = {route.incoming: incoming.model_dump(mode="json", by_alias=True, exclude_unset=True)}
            specs.append(incoming.source)
    else:
        specs.append(route.incoming.source)
    used = sorted({str(c) for spec in specs if isinstance(c := (spec.model_extra or {}).get("connection"), str)})
    connections = {c: config.connections[c] for c in used if c in config.connections}
    if connections:
        data["connections"] = {
            c: spec.model_dump(mode="json", by_alias=True, exclude_unset=True) for c, spec in connections.items()
        }
    text: str = yaml.safe_dump(_masked(data, ctx.redact), sort_keys=False, allow_unicode=True, width=110)
    return ctx.redact(text)
