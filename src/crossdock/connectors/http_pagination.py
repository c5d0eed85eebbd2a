"""How an HTTP source walks from one page to the next, and how it reads records out of XML.

Five styles cover the APIs met in the field: a next URL in the body, an RFC 5988 ``Link`` header, a page
number, an offset with a limit, and an opaque cursor from the body. Each one also knows when it is done.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crossdock.connectors.templates import lookup
from crossdock.errors import SourceError

PaginationType = Literal["none", "next_link", "link_header", "page", "offset", "cursor"]

_DEFAULT_PATH = {"next_link": "_links.next", "cursor": "next_cursor"}
_DEFAULT_PARAM = {"page": "page", "offset": "offset", "cursor": "cursor"}


class Pagination(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: PaginationType = "none"
    #: next_link: where the next page's URL sits in the body (default ``_links.next``);
    #: cursor: where the next cursor sits (default ``next_cursor``)
    path: str | None = None
    #: the query parameter carrying the page number (``page``), offset (``offset``) or cursor (``cursor``)
    param: str | None = None
    #: page: number of the first page
    start: int = 1
    #: page size parameter; offset style: required as the limit (default ``limit``), others: optional
    size_param: str | None = None
    #: records asked per page; offset style stops on a page shorter than this, so keep it within the server's cap
    size: int | None = Field(default=None, ge=1)

    def body_path(self) -> str:
        return self.path if self.path is not None else _DEFAULT_PATH.get(self.type, "")

    def param_name(self) -> str:
        return self.param if self.param is not None else _DEFAULT_PARAM.get(self.type, "")


@dataclass(slots=True)
class PageRequest:
    url: str
    #: query parameters to send; None when the URL already carries them (next links)
    params: dict[str, str] | None


class Paginator:
    """Yields the request of each page in turn; ``advance`` is told what the last page held."""

    def __init__(self, options: Pagination, first_url: str, query: dict[str, str]) -> None:
        self.options = options
        self.query = query
        kind = options.type
        size = options.size if options.size is not None else (100 if kind == "offset" else None)
        self.size = size
        self._size_param = options.size_param or ("limit" if kind == "offset" else None)
        self._number = options.start if kind == "page" else 0
        self._seen: set[str] = set()
        self.current = PageRequest(first_url, self._params(self._first_value()))

    def _first_value(self) -> str | None:
        kind = self.options.type
        if kind == "page":
            return str(self._number)
        if kind == "offset":
            return "0"
        return None

    def _params(self, value: str | None) -> dict[str, str]:
        params = dict(self.query)
        if value is not None:
            params[self.options.param_name()] = value
        if self._size_param and self.size is not None:
            params[self._size_param] = str(self.size)
        return params

    def advance(self, body: Any, headers: Mapping[str, str], count: int, resolve: Any) -> PageRequest | None:
        """The next page's request, or None when the listing is done."""
        kind = self.options.type
        if kind == "none":
            return None
        if kind in ("next_link", "link_header"):
            link = lookup(body, self.options.body_path()) if kind == "next_link" else next_link(headers)
            if not link:
                return None
            url = resolve(str(link))
            if url in self._seen or url == self.current.url:
                raise SourceError(f"pagination loops: the next link {url} was already fetched")
            self._seen.add(self.current.url)
            self.current = PageRequest(url, None)
            return self.current
        if kind == "page":
            if count == 0:
                return None
            self._number += 1
            self.current = PageRequest(self.current.url, self._params(str(self._number)))
            return self.current
        if kind == "offset":
            if count == 0 or (self.size is not None and count < self.size):
                return None
            offset = int(self.current.params[self.options.param_name()] if self.current.params else 0) + count
            self.current = PageRequest(self.current.url, self._params(str(offset)))
            return self.current
        cursor = lookup(body, self.options.body_path())
        if cursor in (None, "") or count == 0:
            return None
        token = str(cursor)
        if token in self._seen:
            raise SourceError(f"pagination loops: cursor {token[:60]!r} was already used")
        self._seen.add(token)
        self.current = PageRequest(self.current.url, self._params(token))
        return self.current


_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.I)


def next_link(headers: Mapping[str, str]) -> str | None:
    """The ``rel="next"`` target of an RFC 5988 ``Link`` header, if any."""
    getall = getattr(headers, "getall", None)
    values = getall("Link", []) if getall is not None else [headers.get("Link", "")]
    for value in values:
        for match in _LINK.finditer(value or ""):
            rel = _REL.search(match.group(2))
            if rel and "next" in (rel.group(1) or rel.group(2) or "").lower().split():
                return match.group(1).strip()
    return None


# --- XML ---------------------------------------------------------------------------------------------

_UNSAFE_XML = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)


def parse_xml(body: bytes, where: str) -> Any:
    """XML → plain data, the root element itself: child elements become keys (repeated ones a list),
    attributes ``@name``, text beside children ``#text``.

    Documents with a DOCTYPE or ENTITY declaration are refused: entity expansion is how XML bombs and
    external-entity leaks work, and no record feed needs them.
    """
    if _UNSAFE_XML.search(body):
        raise SourceError(f"{where}: the XML declares a DOCTYPE or ENTITY; refused (entity expansion is unsafe)")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise SourceError(f"{where}: the response is not well-formed XML: {exc}") from None
    return element_data(root)


def element_data(element: ET.Element) -> Any:
    children = list(element)
    text = (element.text or "").strip()
    if not children and not element.attrib:
        return text
    out: dict[str, Any] = {f"@{_local(k)}": v for k, v in element.attrib.items()}
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(_local(child.tag), []).append(element_data(child))
    for tag, values in groups.items():
        out[tag] = values if len(values) > 1 else values[0]
    if text:
        out["#text"] = text
    return out


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def xml_records(data: Any, path: str, where: str) -> list[Any]:
    """The records at ``path`` (the repeating element, e.g. ``product``) of parsed XML.

    XML cannot tell an empty list from a misspelt element name, so a missing element counts as an empty
    page, unless the document repeats some other element there: then the name is most likely wrong.
    """
    found = lookup(data, path)
    if isinstance(found, list):
        return found
    if isinstance(found, dict):
        return [found]
    if found not in (None, ""):
        raise SourceError(f"{where}: records: {path!r} holds text, not elements")
    parent_path, _, name = path.rpartition(".")
    parent = lookup(data, parent_path)
    if isinstance(parent, dict):
        repeated = [k for k, v in parent.items() if isinstance(v, list)]
        if repeated:
            raise SourceError(
                f"{where}: no <{name}> elements at records: {path!r}; repeated elements there: {', '.join(repeated)}"
            )
    return []
