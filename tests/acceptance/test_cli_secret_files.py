"""A token read from a secret file (``${file:...}``) goes to the shop and never comes back out, with the real CLI.

The token sits under a header whose name does not look secret (``X-Shop-Key``), and the shop quotes the request's
headers in its error answers, so only knowing that the value came from a file keeps it out of the task log,
``tasks show``/``tasks list``, ``run``, ``check`` and a worker's request log.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from crossdock.mock import RunningShop

TOKEN = "shop-key-7c1e9b2a-from-a-file"
FAILING = "SKU-000002"

CONNECTION = """\
connections:
  shop:
    type: http
    base_url: "${SHOP_URL}"
    headers: {X-Shop-Key: "${file:secrets/shop_key}"}
    request_log: full
"""


def assert_hidden(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text, text


def test_a_token_from_a_secret_file_is_sent_but_never_shown(
    project: Any, shop_factory: Callable[..., RunningShop]
) -> None:
    shop = shop_factory(status_for_skus={FAILING: 400}, echo_headers=True)
    project.write("secrets/shop_key", TOKEN + "\n")  # as `echo` and Docker secrets leave it
    project.write_config(CONNECTION + project.route_yaml(connections=False))
    project.write_ndjson("data/in.ndjson", project.products(3))

    check = project.cli("check")
    json_check = project.cli("check", "--json")
    assert json_check.json["ok"] is True

    run = project.run("r")
    assert (run["by_status"]["finished"], run["by_status"]["failed"]) == (2, 1), run
    assert sorted(shop.by_sku) == ["SKU-000001", "SKU-000003"]

    [failed] = project.tasks("--status", "failed")
    shown = project.cli("tasks", "show", str(failed["id"]), "--json")
    detail = shown.json
    [delivery] = [line for line in detail["logs"] if line["phase"] == "export"]
    echoed = delivery["details"]["response"]
    # the shop did get a value for the header (the file's text: it is a known secret), and quoted it back masked
    assert '"X-Shop-Key":"***"' in echoed.replace(" ", ""), echoed
    listed = project.cli("tasks", "list", "--json", "--status", "failed")
    plain = project.cli("tasks", "show", str(failed["id"]))
    assert_hidden(check.stdout, check.stderr, json_check.stdout, shown.stdout, listed.stdout, plain.stdout)

    # a worker logs every exchange with its headers and the echoed answer (request_log: full)
    project.cli("tasks", "retry", str(failed["id"]))
    worker = project.popen("worker", "--log-format", "json")
    try:
        store = project.open_store()
        try:
            assert project.wait_for(lambda: store.get_tasks([failed["id"]])[0].status.value == "failed", 30)
        finally:
            store.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert "X-Shop-Key" in err and "crossdock.http" in err, err[-3000:]
    assert_hidden(out, err)


def test_a_missing_secret_file_stops_check_with_file_line_key(project: Any) -> None:
    project.write_config(CONNECTION + project.route_yaml(connections=False))
    result = project.cli("check", expect=2)
    missing = project.root / "secrets" / "shop_key"
    assert (
        f"config error: {project.config}:5: connections.shop.headers.X-Shop-Key: ${{file:secrets/shop_key}}: "
        f"no file {missing}; create it or mount the secret there, or correct the path"
    ) in result.stderr, result.stderr
