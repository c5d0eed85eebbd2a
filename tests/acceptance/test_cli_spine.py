"""The spine: a project from `init` to delivered tasks, the JSON shapes of the contract, bad input and bad config."""

from __future__ import annotations

import re
from typing import Any

from crossdock.mock import RunningShop

ALL_STATUSES = ["new", "processing", "finished", "failed", "skipped", "rejected", "waiting", "retry"]
TASK_FIELDS = {
    "id",
    "route",
    "identifier",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "error",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def counts(**nonzero: int) -> dict[str, int]:
    return {s: nonzero.get(s, 0) for s in ALL_STATUSES}


# --- 1. init, check, run, and the JSON of list / stats / show ----------------------------------------------


def test_init_check_run_and_json_shapes(project: Any) -> None:
    created = project.cli("init", str(project.root))
    assert "crossdock.yaml" in created.stdout
    check = project.cli("check")
    assert "ok" in check.stdout

    run = project.run("products-to-shop")
    assert run["status"] == "ok"
    # 21 sample records: 18 in stock and valid, 2 out of stock (filtered), 1 without a price (schema)
    assert run["by_status"] == counts(finished=18, skipped=2, rejected=1)
    routes = run["incoming"]["routes"]["products-to-shop"]
    assert (routes["read"], routes["new"], routes["filtered"], routes["rejected"]) == (21, 18, 2, 1)
    assert run["outgoing"]["claimed"] == 18
    assert run["outgoing"]["by_status"] == {"finished": 18}
    delivered = (project.root / "out" / "shop-products.ndjson").read_text().splitlines()
    assert len(delivered) == 18

    listed = project.cli("tasks", "list", "--json", "--limit", "5").json
    assert set(listed) == {"items", "next_cursor"}
    assert len(listed["items"]) == 5
    assert isinstance(listed["next_cursor"], str)
    for item in listed["items"]:
        assert set(item) >= TASK_FIELDS, item
        assert item["route"] == "products-to-shop"
        assert ISO.match(item["created_at"]) and ISO.match(item["updated_at"])
    # newest first, and the cursor continues without overlap
    ids = [t["id"] for t in listed["items"]]
    assert ids == sorted(ids, reverse=True)
    rest = project.cli("tasks", "list", "--json", "--limit", "100", "--cursor", listed["next_cursor"]).json
    assert rest["next_cursor"] is None
    assert len(rest["items"]) == 16
    assert not set(ids) & {t["id"] for t in rest["items"]}

    stats = project.stats()
    assert set(stats) >= {"total", "by_status", "by_route"}
    assert stats["total"] == 21
    assert stats["by_status"] == counts(finished=18, skipped=2, rejected=1)
    assert stats["by_route"] == {"products-to-shop": counts(finished=18, skipped=2, rejected=1)}

    rejected = project.tasks("--status", "rejected")
    assert [t["identifier"] for t in rejected] == ["SKU-BAD"]
    assert "price" in rejected[0]["error"]

    finished = project.tasks("--status", "finished")
    assert len(finished) == 18
    shown = project.show(finished[0]["id"])
    assert set(shown) >= TASK_FIELDS
    assert shown["entity"]["sku"] == finished[0]["identifier"]
    assert shown["logs"], shown
    for line in shown["logs"]:
        assert {"at", "level", "phase", "message"} <= set(line)
        assert ISO.match(line["at"])
    assert shown["logs"][0]["phase"] == "import"
    assert any(ln["phase"] == "export" for ln in shown["logs"]), shown["logs"]

    # a second run sends nothing again
    again = project.run("products-to-shop")
    assert again["outgoing"]["claimed"] == 0
    assert len((project.root / "out" / "shop-products.ndjson").read_text().splitlines()) == 18

    missing = project.cli("tasks", "show", "999999", "--json", expect=1)
    assert "999999" in missing.stderr


# --- 2. 1,000 records to the HTTP shop; 400s fail with the response in the log --------------------------------


def test_thousand_records_to_http_shop(project: Any, shop: RunningShop) -> None:
    project.write_ndjson("data/in.ndjson", project.products(1000))
    project.write_config(project.route_yaml("to-shop"))
    run = project.run("to-shop")
    assert run["status"] == "ok"
    assert run["by_status"] == counts(finished=1000)
    stats = shop.stats()
    assert stats["requests"] == 1000
    assert stats["accepted"] == 1000
    assert stats["duplicate_keys"] == 0
    assert stats["skus"]["/products"] == 1000
    assert shop.by_sku["SKU-000500"]["title"] == "Product 500"
    assert project.stats()["by_status"] == counts(finished=1000)
    project.cli("stats", "--verify")


def test_shop_400_fails_those_tasks_with_the_response_logged(project: Any, shop_factory: Any) -> None:
    bad = {"SKU-000003": 400, "SKU-000050": 400, "SKU-000099": 400}
    shop = shop_factory(status_for_skus=bad)
    project.write_ndjson("data/in.ndjson", project.products(100))
    project.write_config(project.route_yaml("to-shop", extra="    retry: {max_attempts: 5, backoff: 0s}\n"))
    run = project.run("to-shop", expect=0)
    assert run["by_status"] == counts(finished=97, failed=3)
    assert shop.stats()["accepted"] == 97
    assert shop.stats()["requests"] == 100  # a 400 is never retried
    failed = project.tasks("--status", "failed")
    assert sorted(t["identifier"] for t in failed) == sorted(bad)
    for task in failed:
        assert task["attempts"] == 1
        assert "400" in task["error"]
        shown = project.show(task["id"])
        assert shown["entity"]["sku"] == task["identifier"]
        exports = [ln for ln in shown["logs"] if ln["phase"] == "export"]
        assert len(exports) == 1, shown["logs"]
        details = exports[0]["details"]
        assert details["status"] == 400
        assert "category not found" in details["response"]


# --- 3. bad input and bad config -------------------------------------------------------------------------------


def test_malformed_ndjson_line_is_rejected_and_the_rest_goes_on(project: Any, shop: RunningShop) -> None:
    lines = [
        '{"sku": "A1", "title": "ok"}',
        '{"sku": "A2", "title": "ok"}',
        '{"sku": "A3", "title": broken',
        "[1, 2, 3]",
        '{"sku": "A5", "title": "ok"}',
    ]
    project.write("data/in.ndjson", "\n".join(lines) + "\n")
    project.write_config(project.route_yaml())
    run = project.run("r")
    assert run["by_status"] == counts(finished=3, rejected=2)
    rejected = sorted(project.tasks("--status", "rejected"), key=lambda t: t["id"])
    assert "line 3" in rejected[0]["error"] and "in.ndjson" in rejected[0]["error"]
    assert "line 4" in rejected[1]["error"]
    shown = project.show(rejected[0]["id"])
    assert shown["raw"] == lines[2]
    assert sorted(shop.by_sku) == ["A1", "A2", "A5"]


def test_csv_row_with_wrong_field_count_is_rejected(project: Any, shop: RunningShop) -> None:
    project.write("data/in.csv", "sku,title,price\nC1,Chair,1.00\nC2,Table\nC3,Lamp,3.00\nC4,Bed,4.00,extra\n")
    project.write_config(project.route_yaml(source="{type: file, path: data/in.csv}"))
    run = project.run("r")
    assert run["by_status"] == counts(finished=2, rejected=2)
    rejected = sorted(project.tasks("--status", "rejected"), key=lambda t: t["id"])
    assert "in.csv line 3" in rejected[0]["error"] and "2 fields, expected 3" in rejected[0]["error"]
    assert "in.csv line 5" in rejected[1]["error"] and "4 fields" in rejected[1]["error"]
    assert sorted(shop.by_sku) == ["C1", "C3"]
    assert shop.by_sku["C3"] == {"sku": "C3", "title": "Lamp", "price": "3.00"}


def test_entity_over_max_entity_bytes_is_rejected(project: Any, shop: RunningShop) -> None:
    project.write_ndjson(
        "data/in.ndjson",
        [{"sku": "S1", "title": "small"}, {"sku": "B1", "title": "x" * 500}, {"sku": "S2", "title": "small"}],
    )
    project.write_config(project.route_yaml(extra="    validate: {max_entity_bytes: 200}\n"))
    run = project.run("r")
    assert run["by_status"] == counts(finished=2, rejected=1)
    [big] = project.tasks("--status", "rejected")
    assert big["identifier"] == "B1"
    assert "max_entity_bytes" in big["error"] and "200" in big["error"]
    assert sorted(shop.by_sku) == ["S1", "S2"]


def test_config_typo_exits_2_naming_file_line_and_key(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(3))
    text = project.route_yaml(connections=False, target="{type: noop}").replace("identifier:", "identifer:")
    project.write_config(text)
    line = text.splitlines().index("    identifer: sku") + 1
    for args in (["check"], ["run", "r"]):
        result = project.cli(*args, expect=2)
        assert f"crossdock.yaml:{line}" in result.stderr, result
        assert "identifer" in result.stderr
    assert not project.db_path.exists() or project.stats()["total"] == 0


def test_missing_env_var_exits_2_naming_it(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(3))
    project.write_config(project.route_yaml().replace("SHOP_URL", "CD_TEST_NOT_SET_URL"))
    for args in (["check"], ["run", "r"]):
        result = project.cli(*args, expect=2)
        assert "CD_TEST_NOT_SET_URL" in result.stderr, result
        assert "crossdock.yaml:2" in result.stderr, result


def test_unreachable_http_source_fails_the_run_and_creates_no_task(project: Any) -> None:
    port = project.closed_port()
    project.write_config(
        project.route_yaml(
            source=f'{{type: http, url: "http://127.0.0.1:{port}", path: /products, records: items}}',
            target="{type: noop}",
            connections=False,
        )
    )
    run = project.run("r", expect=1)
    assert run["status"] == "failed"
    error = run["incoming"]["error"]
    assert "unreachable" in error or "cannot connect" in error, error
    assert str(port) in error
    assert project.stats()["total"] == 0
    plain = project.cli("run", "r", expect=1)
    assert "cannot connect" in plain.stdout + plain.stderr


# --- 4. check runs the route tests; bad expressions name file, line and key ----------------------------------


def test_check_with_broken_route_test_exits_2_with_a_diff(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(3))
    project.write_config(
        project.route_yaml(
            connections=False,
            target="{type: noop}",
            extra=(
                "    transform:\n"
                "      - string: {path: title, op: upper}\n"
                "    tests:\n"
                "      - name: upper-cases the title\n"
                "        input: {sku: A, title: chair}\n"
                "        expected: {sku: A, title: Chair}\n"
            ),
        )
    )
    result = project.cli("check", expect=2)
    assert "test failed" in result.stderr
    assert "crossdock.yaml:" in result.stderr
    assert "CHAIR" in result.stderr and "Chair" in result.stderr, result
    # fixing the expectation makes check pass
    project.write_config(project.config.read_text().replace("title: Chair}", "title: CHAIR}"))
    project.cli("check", expect=0)


def test_bad_expression_in_a_transform_step_exits_2_naming_file_line_and_key(project: Any) -> None:
    project.write_ndjson("data/in.ndjson", project.products(3))
    text = project.route_yaml(
        connections=False,
        target="{type: noop}",
        extra='    transform:\n      - filter: "stock >> * 2"\n',
    )
    project.write_config(text)
    line = text.splitlines().index('      - filter: "stock >> * 2"') + 1
    for args in (["check"], ["run", "r"]):
        result = project.cli(*args, expect=2)
        assert f"crossdock.yaml:{line}" in result.stderr, result
        assert "routes.r.transform[0]" in result.stderr, result


def test_http_source_with_next_link_pagination_to_http_shop(project: Any, shop: RunningShop) -> None:
    from crossdock.mock import start_erp

    erp = start_erp(products=250, default_page_size=100)
    try:
        project.env["ERP_URL"] = erp.url
        project.write_config(
            'connections:\n  shop: {type: http, base_url: "${SHOP_URL}"}\n  erp: {type: http, base_url: "${ERP_URL}"}\n'
            + project.route_yaml(
                "erp-to-shop",
                source="{type: http, connection: erp, path: /products, records: items, "
                "pagination: {type: next_link, path: _links.next}}",
                connections=False,
            )
        )
        run = project.run("erp-to-shop")
        assert run["incoming"]["read"] == 250
        assert run["by_status"] == counts(finished=250)
        assert erp.requests_to("/products") == 3
        assert shop.stats()["accepted"] == 250
        assert len(shop.by_sku) == 250
        # a second pass: nothing changed at the ERP, nothing is sent
        again = project.run("erp-to-shop")
        assert again["incoming"]["routes"]["erp-to-shop"]["unchanged"] == 250
        assert shop.stats()["accepted"] == 250
    finally:
        erp.stop()
