"""XML <-> JSON, with one convention that round-trips.

An element becomes ``{tag: content}``. Content is a string for a text-only element, null for an empty one,
or an object: attributes under ``@name``, text under ``#text``, children under their tag (a list when the
tag repeats).
Whitespace-only text between child elements (indentation) is dropped; tails of mixed content are not kept.
Parsing refuses DTDs and entity declarations, so entity-expansion and external-entity attacks cannot start.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

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

_UNSAFE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_NAME = re.compile(r"^(\{[^}]*\})?[A-Za-z_][\w.\-]*$")


class XmlError(ValueError):
    """The text is not XML we accept."""


def element_to_json(elem: ET.Element) -> Any:
    """The content of one element (see the module docstring for the shape)."""
    out: dict[str, Any] = {f"@{k}": v for k, v in elem.attrib.items()}
    children = list(elem)
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(child.tag, []).append(element_to_json(child))
    for tag, values in groups.items():
        out[tag] = values[0] if len(values) == 1 else values
    text = elem.text
    if children and text is not None and not text.strip():
        text = None
    if not out:
        return text
    if text is not None:
        out["#text"] = text
    return out


def xml_to_json(text: str | bytes) -> dict[str, Any]:
    """Parse XML safely into ``{root_tag: content}``."""
    probe = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if _UNSAFE.search(probe):
        raise XmlError("DTDs and entity declarations are not allowed")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise XmlError(f"not well-formed XML: {exc}") from None
    return {root.tag: element_to_json(root)}


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise XmlError(f"{name!r} is not a valid XML name")
    return name


def _fill(elem: ET.Element, content: Any) -> None:
    if content is None:
        return
    if not isinstance(content, Mapping):
        elem.text = to_text(content)
        return
    for key, value in content.items():
        if key == "#text":
            elem.text = None if value is None else to_text(value)
        elif key.startswith("@"):
            elem.set(_check_name(key[1:]), to_text(value))
        else:
            for item in value if isinstance(value, list) else [value]:
                _fill(ET.SubElement(elem, _check_name(key)), item)


def json_to_xml(data: Any, root: str | None = None) -> str:
    """Build XML text from the shape ``xml_to_json`` gives; ``root`` wraps data without a single root key."""
    if root is None:
        if not (isinstance(data, Mapping) and len(data) == 1):
            raise XmlError("give 'root', or data with exactly one top-level key")
        ((root, data),) = data.items()
        if isinstance(data, list):
            raise XmlError("the root element cannot repeat")
    elem = ET.Element(_check_name(str(root)))
    _fill(elem, data)
    return ET.tostring(elem, encoding="unicode")


class XmlToJsonOptions(StepOptions):
    path: str
    into: str | None = None


@register_step
class XmlToJsonStep(Step):
    """Parse the XML text at ``path`` into objects (``{product: {"@id": "1", name: "x"}}``)."""

    kind = "xml_to_json"
    Options = XmlToJsonOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = Slot(options.into, where=(*where, "into")) if options.into else self.slot

    def apply(self, entity: Entity) -> Entity:
        value = self.slot.get(entity)
        if value is MISSING or value is None:
            return entity
        if not isinstance(value, str | bytes):
            raise StepFailed(f"cannot parse {self.slot.text} {describe(value)} as XML: not text")
        try:
            self.into.set(entity, xml_to_json(value))
        except XmlError as exc:
            raise StepFailed(f"cannot parse {self.slot.text} as XML: {exc}") from None
        return entity


class JsonToXmlOptions(StepOptions):
    path: str
    root: str | None = None
    into: str | None = None
    #: start the text with <?xml version="1.0" encoding="UTF-8"?>
    declaration: bool = False


@register_step
class JsonToXmlStep(Step):
    """Render the object at ``path`` as XML text (the inverse of xml_to_json)."""

    kind = "json_to_xml"
    Options = JsonToXmlOptions

    def compile(self, options: Any, ctx: CompileContext, where: Where) -> None:
        self.slot = Slot(options.path, where=(*where, "path"))
        self.into = Slot(options.into, where=(*where, "into")) if options.into else self.slot
        self.root = options.root
        if self.root is not None and not _NAME.match(self.root):
            raise StepConfigError(f"{self.root!r} is not a valid XML name", (*where, "root"))
        self.declaration = options.declaration

    def apply(self, entity: Entity) -> Entity:
        value = self.slot.get(entity)
        if value is MISSING:
            return entity
        try:
            text = json_to_xml(value, self.root)
        except XmlError as exc:
            raise StepFailed(f"cannot render {self.slot.text} {describe(value)} as XML: {exc}") from None
        if self.declaration:
            text = '<?xml version="1.0" encoding="UTF-8"?>\n' + text
        self.into.set(entity, text)
        return entity
