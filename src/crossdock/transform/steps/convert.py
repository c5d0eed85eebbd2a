"""The convert step: int, float, decimal, str, bool, date, datetime, timestamp and money to cents."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import model_validator

from crossdock.errors import StepConfigError
from crossdock.transform.expressions import to_text
from crossdock.transform.paths import MISSING, Slot
from crossdock.transform.pipeline import (
    CompileContext,
    Entity,
    Step,
    StepFailed,
    StepOptions,
    Where,
    describe,
    register_step,
)

Target = Literal["int", "float", "decimal", "str", "bool", "date", "datetime", "timestamp", "cents"]


class ConvertError(ValueError):
    """A value that cannot become the target type; the step turns it into a readable reason."""


class ConvertOptions(StepOptions):
    path: str
    to: Target
    #: write the result here instead of over ``path``
    into: str | None = None
    #: what a value that does not convert does: reject the record, become null, or stay as it is
    on_error: Literal["reject", "null", "keep"] = "reject"
    #: numbers written as 1.234,56
    decimal_comma: bool = False
    #: decimal: digits after the point (rounded half up)
    scale: int | None = None
    #: date/datetime: strftime format of the output (default ISO 8601)
    format: str | None = None
    #: date/datetime: strptime format of the input (default ISO 8601, or epoch seconds for numbers)
    from_format: str | None = None
    #: date/datetime: the zone the output is shown in
    tz: str | None = None
    #: date/datetime: the zone of inputs that carry no offset (default UTC)
    from_tz: str | None = None

    @model_validator(mode="after")
    def _date_options(self) -> ConvertOptions:
        date_only = ("format", "from_format", "tz", "from_tz")
        if self.to not in ("date", "datetime", "timestamp"):
            used = [k for k in date_only if getattr(self, k) is not None]
            if used:
                raise ValueError(f"{', '.join(used)} only apply to date, datetime and timestamp")
        if self.scale is not None and self.to != "decimal":
            raise ValueError("scale only applies to decimal")
        return self


_TRUE = frozenset({"true", "yes", "y", "1", "on", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "off", "f", ""})
_INT_TEXT = re.compile(r"[+-]?\d+")
_CENTS_TEXT = re.compile(r"(-?)(\d+)\.(\d\d)")
_MONEY_NOISE = re.compile(r"[^\d.,+-]")


def _number_text(value: str, decimal_comma: bool) -> str:
    text = value.strip().replace("\u00a0", "").replace(" ", "").replace("_", "")
    if decimal_comma:
        text = text.replace(".", "").replace(",", ".")
    return text


def _to_decimal(value: Any, decimal_comma: bool) -> Decimal:
    if isinstance(value, bool):
        raise ConvertError
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            result = Decimal(_number_text(value, decimal_comma))
        except InvalidOperation:
            raise ConvertError from None
        if not result.is_finite():
            raise ConvertError
        return result
    raise ConvertError


def _zone(name: str | None, where: Where) -> tzinfo | None:
    if name is None:
        return None
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise StepConfigError(f"unknown time zone {name!r}", where) from None


@register_step
class ConvertStep(Step):
    """Convert a value's type; a value that does not fit rejects the record (or, with on_error, nulls it)."""

    kind = "convert"
    Options = ConvertOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = Slot(options.into, where=(*where, "into")) if options.into else self.slot
        self.to = options.to
        self.on_error = options.on_error
        self.decimal_comma = options.decimal_comma
        self.quantum = Decimal(1).scaleb(-options.scale) if options.scale is not None else None
        self.format = options.format
        self.from_format = options.from_format
        self.tz = _zone(options.tz, (*where, "tz"))
        self.from_tz = _zone(options.from_tz, (*where, "from_tz")) or UTC
        for key in ("format", "from_format"):
            fmt = getattr(options, key)
            if fmt is not None:
                try:
                    datetime(2000, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(fmt)
                except ValueError as exc:
                    raise StepConfigError(f"bad {key} {fmt!r}: {exc}", (*where, key)) from None
        self.convert: Callable[[Any], Any] = getattr(self, f"_to_{options.to}")

    def apply(self, entity: Entity) -> Entity:
        value = self.slot.get(entity)
        if value is MISSING:
            return entity
        if value is None:
            if self.into is not self.slot:
                self.into.set(entity, None)
            return entity
        try:
            result = self.convert(value)
        except (ConvertError, ValueError, TypeError, OverflowError, InvalidOperation) as exc:
            if self.on_error == "reject":
                detail = f": {exc}" if isinstance(exc, ConvertError) and str(exc) else ""
                raise StepFailed(f"cannot convert {self.slot.text} {describe(value)} to {self.to}{detail}") from None
            if self.on_error == "keep":
                return entity
            result = None
        self.into.set(entity, result)
        return entity

    # --- numbers ---

    def _to_int(self, value: Any) -> int | None:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = _number_text(value, self.decimal_comma)
            if not text:
                return None
            if _INT_TEXT.fullmatch(text):
                return int(text)
            value = self._to_float(text)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, float):
            raise ConvertError("it has a fraction")
        raise ConvertError

    def _to_float(self, value: Any) -> float | None:
        if isinstance(value, bool):
            raise ConvertError
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            text = _number_text(value, self.decimal_comma)
            if not text:
                return None
            result = float(text)
            if result != result or result in (float("inf"), float("-inf")):
                raise ConvertError
            return result
        raise ConvertError

    def _to_decimal(self, value: Any) -> str | None:
        if isinstance(value, str) and not value.strip():
            return None
        number = _to_decimal(value, self.decimal_comma)
        if self.quantum is not None:
            number = number.quantize(self.quantum, rounding=ROUND_HALF_UP)
        return str(number)

    def _to_cents(self, value: Any) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value * 100
        if isinstance(value, str):
            m = _CENTS_TEXT.fullmatch(value)
            if m is not None and not self.decimal_comma:  # the common "19.99": no Decimal needed
                cents = int(m.group(2)) * 100 + int(m.group(3))
                return -cents if m.group(1) else cents
            if not value.strip():
                return None
            if not any(c.isdigit() for c in value):
                raise ConvertError
            value = _MONEY_NOISE.sub("", value)
        number = _to_decimal(value, self.decimal_comma)
        return int((number * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    # --- text and booleans ---

    def _to_str(self, value: Any) -> str:
        return to_text(value)

    def _to_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            if value in (0, 1):
                return bool(value)
            raise ConvertError
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        raise ConvertError

    # --- dates ---

    def _parse_datetime(self, value: Any) -> datetime:
        if isinstance(value, bool):
            raise ConvertError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if not isinstance(value, str):
            raise ConvertError
        text = value.strip()
        if self.from_format is not None:
            parsed = datetime.strptime(text, self.from_format)
        else:
            parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.from_tz)
        return parsed

    def _to_datetime(self, value: Any) -> str | None:
        if isinstance(value, str) and not value.strip():
            return None
        moment = self._parse_datetime(value)
        if self.tz is not None:
            moment = moment.astimezone(self.tz)
        if self.format is not None:
            return moment.strftime(self.format)
        return moment.isoformat()

    def _to_date(self, value: Any) -> str | None:
        if isinstance(value, str) and not value.strip():
            return None
        moment = self._parse_datetime(value)
        if self.tz is not None:
            moment = moment.astimezone(self.tz)
        if self.format is not None:
            return moment.strftime(self.format)
        return date.isoformat(moment.date())

    def _to_timestamp(self, value: Any) -> int | None:
        if isinstance(value, str) and not value.strip():
            return None
        return int(self._parse_datetime(value).timestamp())
