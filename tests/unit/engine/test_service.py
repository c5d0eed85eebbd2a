"""Small pieces of the long-running commands: URL masking, JSON log lines, the worker's route choice."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from crossdock.engine.project import load_project
from crossdock.engine.worker import continuous_routes
from crossdock.logs import JsonFormatter
from crossdock.service import redact_url


def test_redact_url_masks_only_the_password() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/crossdock") == "postgresql://app:***@db:5432/crossdock"
    assert redact_url("postgresql://app@db/crossdock") == "postgresql://app@db/crossdock"
    assert redact_url("sqlite:///crossdock.db") == "sqlite:///crossdock.db"


def test_json_log_line_carries_structured_fields() -> None:
    record = logging.LogRecord("crossdock.worker", logging.INFO, __file__, 1, "route %s", ("a",), None)
    record.data = {"route": "a", "message": "not overwritten"}
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "route a"
    assert line["level"] == "info"
    assert line["route"] == "a"
    assert line["at"].endswith("+00:00")


def test_workers_take_unscheduled_and_realtime_routes_by_priority(tmp_path: Path) -> None:
    (tmp_path / "d.ndjson").write_text("", encoding="utf-8")

    def r(name: str, extra: str, outgoing: str = "") -> str:
        return (
            f"  {name}:\n    incoming: {{source: {{type: file, path: d.ndjson}}}}\n    identifier: sku\n"
            f"    outgoing: {{target: {{type: noop}}{outgoing}}}\n{extra}"
        )

    (tmp_path / "crossdock.yaml").write_text(
        "routes:\n"
        + r("plain", "")
        + r("scheduled", "", ', schedule: "* * * * *"')
        + r("urgent", "    priority: high\n")
        + r("live", "    realtime: true\n", ', schedule: "* * * * *"'),
        encoding="utf-8",
    )
    names = [route.name for route in continuous_routes(load_project(tmp_path / "crossdock.yaml"))]
    assert names == ["urgent", "live", "plain"]
