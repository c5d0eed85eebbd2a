"""Third-party connectors: the example plugin found through its entry point, listed by the CLI, and used by a route.

Installing the plugin into a venv is slow, so the test gives Python what ``pip install`` would leave behind: a
``*.dist-info`` folder with ``entry_points.txt`` on the path, beside the plugin's source.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import crossdock
from crossdock.connectors import registry

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SRC = REPO / "examples" / "plugin-connector" / "src"
SRC = Path(crossdock.__file__).resolve().parent.parent


def fake_install(site: Path, entry_points: str, name: str = "crossdock-stdout") -> Path:
    """What pip leaves for importlib.metadata: METADATA and entry_points.txt in NAME-VERSION.dist-info."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


STDOUT_PLUGIN = "[crossdock.connectors]\ntarget.stdout = crossdock_stdout:StdoutTarget\n"


def cli(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(site), str(PLUGIN_SRC)])}
    env.pop("CROSSDOCK_CONFIG", None)
    env.pop("CROSSDOCK_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "crossdock.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def by_type(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["type"]: row for row in rows}


def test_connectors_lists_built_ins_and_the_plugin(tmp_path: Path) -> None:
    site = fake_install(tmp_path / "site", STDOUT_PLUGIN)
    done = cli(["connectors", "--json"], tmp_path, site)
    assert done.returncode == 0, done.stderr
    listing = orjson.loads(done.stdout)
    targets = by_type(listing["targets"])
    assert targets["stdout"]["origin"] == "plugin crossdock-stdout"
    assert targets["stdout"]["options"] == ["stream", "prefix", "with_key"]
    assert targets["sql"]["origin"] == "built-in"
    assert {"sql", "amqp", "file", "http"} <= set(by_type(listing["sources"]))
    assert by_type(listing["connections"])["sql"]["options"] == ["url", "connect_timeout", "pool_size"]


def test_without_the_plugin_it_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    done = cli(["connectors", "--json"], tmp_path, tmp_path / "site")
    assert "stdout" not in by_type(orjson.loads(done.stdout)["targets"])


def test_a_broken_plugin_is_reported_not_fatal(tmp_path: Path) -> None:
    site = fake_install(
        tmp_path / "site", "[crossdock.connectors]\nsource.broken = no_such_module_here:Source\n", name="broken-plugin"
    )
    done = cli(["connectors", "--json"], tmp_path, site)
    assert done.returncode == 0, done.stderr
    sources = by_type(orjson.loads(done.stdout)["sources"])
    assert "ModuleNotFoundError" in sources["broken"]["error"]
    assert "options" in sources["sql"]
    table = cli(["connectors"], tmp_path, site)
    assert table.returncode == 0 and "broken" in table.stdout


def test_a_route_delivers_through_the_plugin_target(tmp_path: Path) -> None:
    site = fake_install(tmp_path / "site", STDOUT_PLUGIN)
    project = tmp_path / "project"
    project.mkdir()
    (project / "orders.ndjson").write_text('{"id": "o-1", "total": 5}\n{"id": "o-2", "total": 7}\n')
    config = {
        "routes": {
            "preview": {
                "incoming": {"source": {"type": "file", "path": "orders.ndjson"}},
                "identifier": "id",
                "outgoing": {"target": {"type": "stdout", "stream": "stderr", "prefix": "order: "}},
            }
        }
    }
    (project / "crossdock.yaml").write_text(yaml.safe_dump(config))
    done = cli(["run", "preview", "--json"], project, site)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["by_status"]["finished"] == 2
    printed = [line for line in done.stderr.splitlines() if line.startswith("order: ")]
    assert [orjson.loads(line.removeprefix("order: "))["id"] for line in printed] == ["o-1", "o-2"]


def test_a_misspelt_plugin_option_is_a_config_error(tmp_path: Path) -> None:
    site = fake_install(tmp_path / "site", STDOUT_PLUGIN)
    config = {
        "routes": {
            "preview": {
                "incoming": {"source": {"type": "file", "path": "x.ndjson"}},
                "identifier": "id",
                "outgoing": {"target": {"type": "stdout", "straem": "stderr"}},
            }
        }
    }
    (tmp_path / "crossdock.yaml").write_text(yaml.safe_dump(config))
    done = cli(["check"], tmp_path, site)
    assert done.returncode == 2
    assert "straem" in done.stderr


def test_registry_finds_entry_points_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = fake_install(tmp_path / "site", STDOUT_PLUGIN + "target.sql = crossdock_stdout:StdoutTarget\n")
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    monkeypatch.syspath_prepend(str(site))
    assert registry.target_types()["stdout"] == "crossdock_stdout:StdoutTarget"
    assert registry.target_class("stdout").__name__ == "StdoutTarget"
    # a plugin cannot replace a built-in of the same name
    assert registry.target_types()["sql"] == "crossdock.connectors.sql:SqlTarget"
