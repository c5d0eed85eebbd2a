"""The webhook source: records pushed to ``POST /api/v1/webhooks/{name}`` instead of pulled on a schedule.

The web layer checks the shared secret header with :func:`verify_secret_header`, reads the body (bounded), checks
its signature with :func:`verify_signature`, turns it into records with :func:`parse_payload` and hands them to
the importer. Run on a schedule, the source has nothing to read.

Replay protection is opt-in per source: ``timestamp_tolerance`` makes the signature cover a timestamp
(``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, as Stripe-style senders do) so an old signed body
cannot be sent again later; ``idempotency_window`` makes an ``Idempotency-Key`` header answer a repeated request
with the first answer instead of importing it again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal
from xml.etree.ElementTree import Element

import orjson
from pydantic import Field, model_validator

from crossdock.config.models import Duration
from crossdock.connectors.base import Malformed, Options, Source

DEFAULT_MAX_BODY = 1024 * 1024
SECRET_HEADER = "X-Crossdock-Secret"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: a timestamped signature header carries at most this many ``v1=`` values (one per secret the sender rotates)
MAX_SIGNATURES = 8


class WebhookSourceOptions(Options):
    type: Literal["webhook"] = "webhook"
    #: shared secret the sender puts in the ``X-Crossdock-Secret`` header
    secret: str | None = None
    #: key of an HMAC-SHA256 signature of the raw body, sent hex-encoded (``sha256=`` prefix accepted)
    hmac_secret: str | None = None
    #: header holding that signature
    signature_header: str = "X-Crossdock-Signature"
    #: bodies larger than this are refused with 413
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY, ge=1, le=1024 * 1024 * 1024)
    #: set: the signature header is ``t=<unix seconds>,v1=<hex HMAC of "<t>.<body>">`` and ``t`` may be at most
    #: this far from our clock (either way), so a captured request cannot be replayed later
    timestamp_tolerance: Duration | None = None
    #: set: an ``Idempotency-Key`` header is remembered this long; the same key again gets the first answer
    idempotency_window: Duration | None = None

    @model_validator(mode="after")
    def _non_empty_secrets(self) -> WebhookSourceOptions:
        for name in ("secret", "hmac_secret"):
            value = getattr(self, name)
            if value is not None and len(value) < 8:
                raise ValueError(f"{name} must be at least 8 characters long")
        if self.timestamp_tolerance is not None:
            if self.hmac_secret is None:
                raise ValueError(
                    "timestamp_tolerance needs hmac_secret: the timestamp is only worth checking when it is signed"
                )
            if not 1 <= self.timestamp_tolerance <= 86400:
                raise ValueError("timestamp_tolerance must be between 1s and 24h (5m is usual)")
        if self.idempotency_window is not None and not 1 <= self.idempotency_window <= 30 * 86400:
            raise ValueError("idempotency_window must be between 1s and 30d (24h is usual)")
        return self

    @property
    def has_secret(self) -> bool:
        return bool(self.secret or self.hmac_secret)


class WebhookSource(Source):
    """Pushed data only: a scheduled or manual run reads nothing."""

    options_model = WebhookSourceOptions

    async def pages(self) -> AsyncIterator[list[Any]]:
        return
        yield  # an async generator that yields nothing

    def describe(self) -> str:
        return "webhook"


class PayloadError(ValueError):
    """The body is not JSON, NDJSON or XML we can turn into records."""


def verify_request(
    options: WebhookSourceOptions, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str | None:
    """None when the request carries every configured credential, else why it is refused.

    Comparisons are constant-time, so the answer time does not reveal how much of a secret matched. ``now``
    (unix seconds) is the clock a timestamped signature is checked against.
    """
    return verify_secret_header(options, headers) or verify_signature(options, headers, body, now=now)


def verify_secret_header(options: WebhookSourceOptions, headers: Mapping[str, str]) -> str | None:
    """The ``X-Crossdock-Secret`` part of :func:`verify_request`: it needs no body, so it comes before reading one."""
    if options.secret is not None:
        given = headers.get(SECRET_HEADER.lower()) or headers.get(SECRET_HEADER) or ""
        if not hmac.compare_digest(given.encode(), options.secret.encode()):
            return f"missing or wrong {SECRET_HEADER} header"
    return None


def verify_signature(
    options: WebhookSourceOptions, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str | None:
    """The HMAC part of :func:`verify_request`: the signature of the whole body (and its signed timestamp)."""
    if options.hmac_secret is not None:
        header = options.signature_header
        given = (headers.get(header.lower()) or headers.get(header) or "").strip()
        if options.timestamp_tolerance is not None:
            return _verify_timestamped(options, header, given, body, time.time() if now is None else now)
        given = given.removeprefix("sha256=")
        expected = hmac.new(options.hmac_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.lower().encode(), expected.encode()):
            return f"missing or wrong HMAC-SHA256 signature in the {header} header"
    return None


def sign_timestamped(key: str, body: bytes, timestamp: int) -> str:
    """The ``t=…,v1=…`` header value a sender computes; for tests, examples and ``crossdock`` as a sender."""
    return f"t={timestamp},v1={_timestamped_hmac(key, body, str(timestamp))}"


def _timestamped_hmac(key: str, body: bytes, timestamp: str) -> str:
    return hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _verify_timestamped(options: WebhookSourceOptions, header: str, given: str, body: bytes, now: float) -> str | None:
    """Signature first, then the clock: a sender without the key learns only that its signature is wrong."""
    assert options.hmac_secret is not None and options.timestamp_tolerance is not None
    stamps: list[str] = []
    signatures: list[str] = []
    for part in given.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamps.append(value.strip())
        elif name == "v1":
            signatures.append(value.strip().lower())
    shape = f'{header} must be t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>"> (timestamp_tolerance is set)'
    if len(stamps) != 1 or not signatures:
        return f"missing or malformed signature: {shape}"
    if len(signatures) > MAX_SIGNATURES:
        return f"{header} carries {len(signatures)} v1= signatures; at most {MAX_SIGNATURES} are checked"
    stamp = stamps[0]
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return f"the t= value in {header} is not a unix time in whole seconds: {shape}"
    expected = _timestamped_hmac(options.hmac_secret, body, stamp).encode()
    # compare with every value, so the time does not tell which one (if any) matched
    matched = [hmac.compare_digest(s.encode(), expected) for s in signatures]
    if not any(matched):
        return f"missing or wrong HMAC-SHA256 signature in the {header} header"
    skew = now - int(stamp)
    tolerance = options.timestamp_tolerance
    if abs(skew) > tolerance:
        when = f"{skew:.0f} s old" if skew > 0 else f"{-skew:.0f} s in the future"
        return (
            f"the signed timestamp in {header} is {when}; this webhook takes at most {tolerance:g} s either way "
            "(timestamp_tolerance): send each request signed with the current time, and check the sender's clock"
        )
    return None


def parse_payload(body: bytes, content_type: str | None) -> list[Any]:
    """Records from a JSON object or list, NDJSON, or XML. Raises :class:`PayloadError` with a reason."""
    kind = (content_type or "").split(";")[0].strip().lower()
    text = body.lstrip()
    if not text:
        raise PayloadError("the body is empty")
    if kind.endswith("xml") or (not kind.endswith("json") and text[:1] == b"<"):
        return parse_xml(body)
    if kind in ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"):
        return _ndjson(body)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\n" in text.rstrip():
            return _ndjson(body)
        raise PayloadError(f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        if not data:
            raise PayloadError("the JSON list is empty")
        # non-objects in a list become rejected tasks, so the sender can see what went wrong
        return [
            item if isinstance(item, dict) else Malformed(orjson.dumps(item).decode(), f"item {i}: not a JSON object")
            for i, item in enumerate(data)
        ]
    raise PayloadError("expected a JSON object or a list of objects")


def _ndjson(body: bytes) -> list[Any]:
    records: list[Any] = []
    for lineno, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            records.append(Malformed(line.decode("utf-8", "replace"), f"line {lineno}: invalid JSON ({exc})"))
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            records.append(Malformed(line.decode("utf-8", "replace"), f"line {lineno}: expected a JSON object"))
    if not records:
        raise PayloadError("the NDJSON body holds no records")
    return records


def parse_xml(body: bytes) -> list[Any]:
    """The root's children are the records when they share one tag and hold elements; else the root is one.

    ``<products><product><sku>A</sku></product>…</products>`` gives one record per ``product``. DTDs and
    entities are refused (no billion laughs, no external entities).
    """
    root = _xml_root(body)
    children = list(root)
    if children and len({c.tag for c in children}) == 1 and all(len(c) or c.attrib for c in children):
        return [_record(c) for c in children]
    return [_record(root)]


def _record(el: Element) -> Any:
    value = _element(el)
    return value if isinstance(value, dict) else {_local(el.tag): value}


def _xml_root(body: bytes) -> Element:
    try:
        from defusedxml import ElementTree as safe_et
    except ImportError:  # pragma: no cover - defusedxml is a dependency; keep a safe fallback anyway
        return _stdlib_root(body)
    from defusedxml import DefusedXmlException

    try:
        root: Element = safe_et.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise PayloadError(f"XML with DTDs or entities is not accepted: {exc}") from None
    except Exception as exc:  # ParseError and friends
        raise PayloadError(f"the body is not well-formed XML: {exc}") from None
    return root


def _stdlib_root(body: bytes) -> Element:
    from xml.etree.ElementTree import ParseError, XMLParser

    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise PayloadError("XML with DTDs or entities is not accepted")
    parser = XMLParser()
    try:
        parser.feed(body)
        return parser.close()
    except ParseError as exc:
        raise PayloadError(f"the body is not well-formed XML: {exc}") from None


def _element(el: Element) -> Any:
    """Attributes as ``@name``, child elements by tag (repeated tags become lists), text as a string."""
    children = list(el)
    if not children and not el.attrib:
        return (el.text or "").strip()
    out: dict[str, Any] = {f"@{k}": v for k, v in el.attrib.items()}
    for child in children:
        tag = _local(child.tag)
        value = _element(child)
        if tag in out:
            existing = out[tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                out[tag] = [existing, value]
        else:
            out[tag] = value
    text = (el.text or "").strip()
    if text:
        out["#text"] = text
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
