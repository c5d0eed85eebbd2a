"""Bad input: clear errors naming file and line, records before the error kept, malformed lines rejected with
their raw text, and a flat-memory check of the XML reader on a wrong record element."""

from __future__ import annotations

import io
import json

import pytest

from crossdock.connectors.base import Malformed
from crossdock.connectors.files import FileSourceOptions, record_pages
from crossdock.connectors.xmlrecords import xml_record_pages
from crossdock.errors import SourceError


def pages(data: bytes, record: str = "product") -> list[object]:
    return [r for page in xml_record_pages(io.BytesIO(data), "f.xml", record) for r in page]


def test_a_wrong_record_element_names_the_elements_there() -> None:
    with pytest.raises(SourceError, match=r"f.xml: no <prodcut> elements found; elements in the file: <catalog>"):
        pages(b"<catalog><product><sku>1</sku></product></catalog>", "prodcut")


def test_an_empty_document_is_no_error() -> None:
    assert pages(b"<catalog/>") == []


def test_malformed_xml_names_line_and_column_and_keeps_records_before() -> None:
    got: list[object] = []
    with pytest.raises(SourceError, match=r"f.xml: malformed XML at line 3 column \d+: mismatched tag"):
        for page in xml_record_pages(
            io.BytesIO(b"<c>\n<product><sku>1</sku></product>\n<product><sku>2</sku></oops>\n</c>"), "f.xml", "product"
        ):
            got += page
    assert got == [{"sku": "1"}]


def test_entity_declarations_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
    bomb += b"<c><product>&b;</product></c>"
    with pytest.raises(SourceError, match="entity declarations are not allowed"):
        pages(bomb)


def test_a_wrong_record_element_does_not_build_the_document(tmp_path: object) -> None:
    """Elements outside records are never kept: 200,000 of them cost no memory to speak of."""
    import tracemalloc

    body = b"".join(b"<item><sku>%d</sku><name>x</name></item>" % i for i in range(200_000))
    data = b"<catalog>" + body + b"<product><sku>last</sku></product></catalog>"
    tracemalloc.start()
    assert pages(data) == [{"sku": "last"}]
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak} bytes while reading {len(data)} bytes"


def test_malformed_ndjson_lines_are_rejected_records_with_their_raw_text(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "in.ndjson"
    path.write_text(json.dumps({"sku": "A"}) + "\n{broken\n[1, 2]\n" + json.dumps({"sku": "B"}) + "\n")
    records = [r for page in record_pages(path, FileSourceOptions(path="in.ndjson")) for r in page]
    assert records[0] == {"sku": "A"} and records[3] == {"sku": "B"}
    assert isinstance(records[1], Malformed) and records[1].raw == "{broken"
    assert records[1].reason.startswith("in.ndjson line 2: invalid JSON")
    assert isinstance(records[2], Malformed) and records[2].reason == "in.ndjson line 3: expected a JSON object"


def test_a_truncated_json_array_is_a_clear_source_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "in.json"
    path.write_text('[{"sku": "A"}, {"sku": "B"}, {"sku": "C", "na')
    got: list[object] = []
    with pytest.raises(SourceError, match=r"in.json: invalid or truncated JSON after record 2"):
        for page in record_pages(path, FileSourceOptions(path="in.json")):
            got += page
    assert got == [{"sku": "A"}, {"sku": "B"}], "the records before the truncation are kept"
