"""``crossdock run`` shows its log lines when asked: ``-v`` / ``--log-level`` pick how many, ``--log-format json``
gives one object per line; stdout keeps only the summary."""

from __future__ import annotations

from typing import Any

import orjson


def test_run_shows_info_lines_when_asked(project: Any) -> None:
    project.write_ndjson("in/one.ndjson", project.products(2))
    project.write_config(
        project.route_yaml(source='{type: file, path: "in/*.ndjson"}', target="{type: noop}", connections=False)
    )
    project.run("r")
    quiet = project.cli("run", "r")
    assert "skipped, already imported" not in quiet.stderr
    verbose = project.cli("run", "r", "-v")
    assert "INFO    crossdock.connectors.files: one.ndjson: skipped, already imported as one.ndjson" in verbose.stderr
    assert "skipped, already imported" not in verbose.stdout
    as_json = project.cli("run", "r", "--json", "--log-level", "info", "--log-format", "json")
    [line] = [orjson.loads(x) for x in as_json.stderr.splitlines() if x.startswith("{")]
    assert (line["level"], line["logger"]) == ("info", "crossdock.connectors.files")
    assert as_json.json["status"] == "ok"
    bad = project.cli("run", "r", "--log-level", "chatty", expect=2)
    assert "--log-level: 'chatty' is not one of debug, info, warning, error" in bad.stderr
