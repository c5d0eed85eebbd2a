"""Typed configuration models for ``crossdock.yaml``. Unknown keys are errors, so typos never pass silently."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``6h``, ``30d``, ``250ms`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 6h or 30d")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; use e.g. 30s, 5m, 6h or 30d")
    return float(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_resend(value: Any) -> bool | float:
    """``false``, ``true`` or a period such as ``6h`` (seconds, more than zero)."""
    if isinstance(value, bool):
        return value
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a resend period must be longer than zero; use false to never resend")
    return seconds


#: ``resend_failed``: whether an unchanged record whose latest task failed or was rejected is sent again
Resend = Annotated[bool | float, BeforeValidator(parse_resend)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ConnectorSpec(BaseModel):
    """A source or target block: ``type`` picks the connector, which validates the other keys itself."""

    model_config = ConfigDict(extra="allow")
    type: str


class CircuitConfig(Strict):
    """A circuit breaker: after ``failures`` consecutive transient delivery failures nothing is sent to the target
    for ``cooldown``, and the tasks keep their attempts; then one probe delivery decides whether it closes."""

    failures: int = Field(ge=1, le=1_000_000)
    cooldown: Duration = 60.0

    @field_validator("cooldown")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("a cooldown must be longer than zero, e.g. 30s or 1m")
        return value


def _moment(value: Any) -> Any:
    """A window's ``from``/``to``: an ISO timestamp; one without a timezone is UTC, a bare date is its midnight UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO timestamp; write e.g. 2026-12-24T02:00:00Z (no timezone means UTC)"
            ) from None
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


Moment = Annotated[datetime, BeforeValidator(_moment)]


class MaintenanceWindow(Strict):
    """A time when nothing is delivered: every ``cron`` fire for ``duration`` (cron in UTC, as ``schedule:``), or
    once ``from`` … ``to``. ``imports: false`` stops reading sources during the window too."""

    cron: str | None = None
    duration: Duration | None = None
    from_: Moment | None = Field(default=None, alias="from")
    to: Moment | None = None
    #: whether scheduled and manual imports go on during the window (deliveries never do)
    imports: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 2 * * *', in UTC)")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("a window's duration must be longer than zero, e.g. 30m or 2h")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> MaintenanceWindow:
        recurring = self.cron is not None or self.duration is not None
        once = self.from_ is not None or self.to is not None
        if recurring == once:
            raise ValueError(
                "give either cron: and duration: (e.g. {cron: '0 2 * * *', duration: 2h}) or from: and to: "
                "(ISO timestamps, e.g. {from: 2026-12-24T02:00:00Z, to: 2026-12-24T06:00:00Z})"
            )
        if recurring:
            if self.cron is None or self.duration is None:
                raise ValueError("a recurring window needs both cron: and duration:")
        else:
            if self.from_ is None or self.to is None:
                raise ValueError("a one-off window needs both from: and to:")
            if self.to <= self.from_:
                raise ValueError(f"to ({self.to.isoformat()}) must be after from ({self.from_.isoformat()})")
        return self


class ConnectionSpec(ConnectorSpec):
    """A ``connections:`` entry: the connector's own keys, plus the delivery gates every route sending to it
    shares (its ``type``'s model never sees these)."""

    #: one breaker for every route whose target uses this connection
    circuit: CircuitConfig | None = None
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)


#: the keys of a connection that belong to crossdock, not to its connector type
GATE_KEYS = frozenset({"circuit", "maintenance"})


class IncomingConfig(Strict):
    source: ConnectorSpec
    #: cron expression; omit to run on demand only
    schedule: str | None = None
    transform: list[Any] = Field(default_factory=list)
    #: records per import batch (one transaction each)
    batch_size: int = Field(default=5000, ge=1, le=100_000)


#: the default ``validate.max_entity_bytes``: a record is one business object, not a bulk file; 10 MiB holds the
#: largest product or order with room, and keeps one runaway record from taking the process's memory
DEFAULT_MAX_ENTITY_BYTES = 10 * 1024 * 1024
#: what ``max_entity_bytes: null`` lifts the limit to, and the most a route may set: PostgreSQL's jsonb holds
#: under 256 MiB per value, and every byte of an entity is held in memory a few times on its way
MAX_ENTITY_BYTES_CEILING = 255 * 1024 * 1024


def _entity_limit(value: Any) -> Any:
    """``null`` lifts the limit to the ceiling; ``0`` is refused, because it reads as either "none" or "no limit"."""
    if value is None:
        return MAX_ENTITY_BYTES_CEILING
    if value == 0 and not isinstance(value, bool):
        raise ValueError(
            f"0 is not a size; give the largest entity to accept in bytes, or null to lift the limit to the "
            f"ceiling of {MAX_ENTITY_BYTES_CEILING:,} bytes (255 MiB)"
        )
    return value


class ValidateConfig(Strict):
    #: entities larger than this (as compact JSON) are rejected; ``null`` = the ceiling (255 MiB)
    max_entity_bytes: Annotated[int, BeforeValidator(_entity_limit)] = Field(
        default=DEFAULT_MAX_ENTITY_BYTES, ge=1, le=MAX_ENTITY_BYTES_CEILING
    )
    #: JSON Schema file (relative to the project) the entity must match
    schema_: str | None = Field(default=None, alias="schema")


class PauseAfter(Strict):
    """When crossdock switches a route off by itself: after ``failed`` consecutive failed tasks, and/or when at
    least ``failed_ratio`` of the tasks settled ``within`` the last period failed (and there were ``min_tasks``)."""

    failed: int | None = Field(default=None, ge=1)
    failed_ratio: float | None = Field(default=None, gt=0, le=1)
    within: Duration = 600.0
    min_tasks: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> PauseAfter:
        if self.failed is None and self.failed_ratio is None:
            raise ValueError("give failed: N (consecutive failed tasks) or failed_ratio: 0.5 (with within, min_tasks)")
        return self


class RetryConfig(Strict):
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff: Duration = 30.0
    max_backoff: Duration = 6 * 3600.0
    #: random spread added to each delay, as a fraction of it
    jitter: float = Field(default=0.2, ge=0, le=1)


class OutgoingConfig(Strict):
    transform: list[Any] = Field(default_factory=list)
    target: ConnectorSpec
    schedule: str | None = None
    #: tasks per outgoing run (the scheduler's cap)
    batch_size: int = Field(default=100, ge=1, le=1_000_000)
    #: deliveries in flight at once for this route
    concurrency: int = Field(default=16, ge=1, le=1024)
    #: how long a worker owns a claimed task before others may take it back
    lease: Duration = 300.0
    #: ``immediate``: a delivery's result is committed before its concurrency slot takes the next task, so a
    #: process killed at any moment re-sends at most ``concurrency`` tasks; ``batched``: the slot moves on at
    #: once and results are committed in groups behind it (faster against targets that answer in about a
    #: millisecond; after a crash up to a claim batch may be sent again)
    settle: Literal["immediate", "batched"] = "immediate"
    #: a circuit breaker for this route's target; wins over its connection's ``circuit:``
    circuit: CircuitConfig | None = None


class RouteConfig(Strict):
    active: bool = True
    priority: Literal["high", "medium", "low"] = "medium"
    incoming: str | IncomingConfig
    #: route transformers, applied after the incoming's transform, before identifier and validation
    transform: list[Any] = Field(default_factory=list)
    identifier: str | list[str]
    delta: bool = True
    supersede: bool = True
    #: an unchanged record whose latest task failed or was rejected: false touches that task (no resend storm),
    #: true sends it again on every import, a period sends it again at most once per period
    resend_failed: Resend = False
    #: switch the route off when its deliveries keep failing; activating it again clears the pause
    pause_after: PauseAfter | None = None
    #: times when nothing is delivered on this route (and, with ``imports: false``, nothing imported)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    outgoing: OutgoingConfig
    realtime: bool = False
    waiting: bool = False
    retry: RetryConfig | None = None
    tests: list[dict[str, Any]] = Field(default_factory=list)


class RetentionConfig(Strict):
    finished: Duration = 30 * 86400.0
    skipped: Duration = 30 * 86400.0
    failed: Duration = 90 * 86400.0
    rejected: Duration = 90 * 86400.0
    #: cron for the scheduler's pruning pass
    schedule: str = "17 3 * * *"


class StorageConfig(Strict):
    ttl: Duration | None = None


class NamedTransformer(Strict):
    """A transformer defined once under ``transformers:``, with optional examples that ``check`` runs."""

    steps: list[Any]
    tests: list[dict[str, Any]] = Field(default_factory=list)


def _address_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class EmailChannel(Strict):
    """SMTP: ``security`` ``starttls`` (port 587 by default), ``tls`` (465) or ``none`` (25, a relay you trust)."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    from_: str = Field(alias="from", min_length=3)
    to: Annotated[list[str], BeforeValidator(_address_list)] = Field(min_length=1)
    timeout: Duration = 30.0

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]

    def destination(self) -> str:
        return f"{', '.join(self.to)} via {self.host}:{self.effective_port}"


def _http_url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


class WebhookChannel(Strict):
    """A JSON POST; with ``hmac_secret`` signed like crossdock's own inbound webhooks (``t=…,v1=…``)."""

    type: Literal["webhook"]
    url: Annotated[str, BeforeValidator(_http_url)]
    hmac_secret: str | None = None
    signature_header: str = "X-Crossdock-Signature"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0

    def destination(self) -> str:
        return self.url


class SlackChannel(Strict):
    """A Slack (or Mattermost, or Teams workflow) incoming-webhook URL: the URL itself is the secret."""

    type: Literal["slack"]
    url: Annotated[str, BeforeValidator(_http_url)]
    timeout: Duration = 10.0

    def destination(self) -> str:
        return "incoming webhook"


AlertChannel = Annotated[EmailChannel | WebhookChannel | SlackChannel, Field(discriminator="type")]

#: what a rule can be about; ``recovered`` follows the others: the problem an alert was sent for has cleared
ALERT_EVENTS = ("task_failed", "run_error", "route_paused", "circuit_open", "backlog", "recovered")
AlertEvent = Literal["task_failed", "run_error", "route_paused", "circuit_open", "backlog", "recovered"]
#: the digest window of a rule that names none: failures come in bursts, the rest is rare and urgent
DEFAULT_DIGEST = {"task_failed": 300.0, "run_error": 300.0}


class AlertRule(Strict):
    """When to tell whom: one message per route and ``digest`` window, never one per task."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    event: AlertEvent
    #: routes the rule covers; all when left out
    routes: list[str] | None = None
    channels: list[str] = Field(min_length=1)
    digest: Duration | None = Field(default=None, ge=0)
    #: ``backlog``: the age of the oldest new, retry or waiting task that raises it
    older_than: Duration | None = Field(default=None, gt=0)
    #: ``task_failed``: send only when a window holds at least this many failures
    min_count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _backlog_age(self) -> AlertRule:
        if self.event == "backlog" and self.older_than is None:
            raise ValueError("a backlog rule needs older_than, e.g. older_than: 30m")
        if self.event != "backlog" and self.older_than is not None:
            raise ValueError("older_than belongs to backlog rules only")
        return self

    @property
    def window(self) -> float:
        return self.digest if self.digest is not None else DEFAULT_DIGEST.get(self.event, 0.0)


class AlertsConfig(Strict):
    channels: dict[str, AlertChannel] = Field(default_factory=dict)
    rules: list[AlertRule] = Field(default_factory=list)
    #: the dashboard's address as people reach it, for the links in messages (default: serve's own address)
    dashboard_url: Annotated[str | None, BeforeValidator(_http_url)] = None
    #: how often the leader looks for something to tell
    check_every: Duration = Field(default=5.0, gt=0)
    #: tries per message before it is recorded as failed
    max_attempts: int = Field(default=6, ge=1, le=100)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        names = [rule.name for rule in self.rules if rule.name]
        if len(names) != len(set(names)):
            raise ValueError("two rules have the same name")
        return self

    def rule_key(self, index: int) -> str:
        """A rule's stable name: its ``name``, else its event and place (``task_failed#1``)."""
        rule = self.rules[index]
        return rule.name or f"{rule.event}#{index + 1}"


class ProjectConfig(Strict):
    database: str | None = None
    include: list[str] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)
    incomings: dict[str, IncomingConfig] = Field(default_factory=dict)
    transformers: dict[str, list[Any] | NamedTransformer] = Field(default_factory=dict)
    storages: dict[str, StorageConfig] = Field(default_factory=dict)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("routes", "incomings", "connections")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"name {name!r} may only hold letters, digits, '-', '_' and '.'")
        return value

    def transformer_steps(self) -> dict[str, list[Any]]:
        """Named transformers as plain step lists, whichever form they were written in."""
        return {k: (v.steps if isinstance(v, NamedTransformer) else v) for k, v in self.transformers.items()}
