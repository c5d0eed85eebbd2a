"""Reading values out of an entity by dotted path, and ``{field}`` templates over them, for every connector."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from crossdock.errors import PermanentError

PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path (``_links.next``, ``data.items``, ``lines.0``) into parsed JSON."""
    if not path:
        return data
    for part in path.split("."):
        if type(data) is dict or isinstance(data, Mapping):  # the exact-type test skips the slow ABC check
            data = data.get(part)
        elif isinstance(data, list) and part.lstrip("-").isdigit():
            i = int(part)
            data = data[i] if -len(data) <= i < len(data) else None
        else:
            return None
    return data


def compile_template(template: str, *, encode: bool = False) -> Callable[[Any], str]:
    """``/products/{sku}`` or ``products.{category}`` → a function of the entity.

    With ``encode`` values are URL-encoded (for paths). A missing value is a permanent error: bad data, which
    retrying will not fix.
    """
    pieces = PLACEHOLDER.split(template)
    if len(pieces) == 1:
        return lambda _entity: template

    def render(entity: Any) -> str:
        out = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                out.append(piece)
                continue
            value = lookup(entity, piece.strip())
            if value is None:
                raise PermanentError(f"template {template!r}: the entity has no value at {piece.strip()!r}")
            text = str(value)
            out.append(quote(text, safe="") if encode else text)
        return "".join(out)

    return render
