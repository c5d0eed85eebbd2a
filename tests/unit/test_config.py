"""Loading crossdock.yaml: YAML errors with lines, unknown and missing keys, ${ENV}, includes, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdock.config import load_config, parse_duration
from crossdock.engine.project import load_project
from crossdock.errors import ConfigError, ConfigErrors

ROUTE = """\
routes:
  r:
    incoming:
      source: {type: file, path: data/in.ndjson}
    identifier: sku
    outgoing:
      target: {type: noop}
"""


def write(tmp_path: Path, text: str, name: str = "crossdock.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, environ: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises((ConfigErrors, ConfigError)) as info:
        load_config(path, environ if environ is not None else {})
    exc = info.value
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def test_valid_config_loads(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, ROUTE), {})
    route = loaded.config.routes["r"]
    assert route.identifier == "sku"
    assert route.delta is True and route.retry is None
    assert loaded.root == tmp_path


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = ROUTE + "  broken: [unclosed\n  other: 1\n"
    errors = errors_of(write(tmp_path, text))
    assert len(errors) == 1
    assert errors[0].file is not None and errors[0].file.endswith("crossdock.yaml")
    assert errors[0].line is not None and errors[0].line >= 8
    assert "invalid YAML" in errors[0].message
    assert f"crossdock.yaml:{errors[0].line}" in errors[0].message


def test_bad_indentation_names_the_line(tmp_path: Path) -> None:
    text = "routes:\n  r:\n    identifier: sku\n   outgoing: x\n"
    [error] = errors_of(write(tmp_path, text))
    assert error.line == 4, error.message


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    text = ROUTE.replace("identifier: sku", "identifier: sku\n    identifer: sku")
    errors = errors_of(write(tmp_path, text))
    [error] = errors
    assert error.line == 6
    assert error.key == "routes.r.identifer"
    assert "unknown key" in error.message
    assert "crossdock.yaml:6: routes.r.identifer:" in error.message


def test_unknown_key_in_a_connector_block(tmp_path: Path) -> None:
    from crossdock.engine.project import load_project

    path = write(tmp_path, ROUTE.replace("path: data/in.ndjson}", "path: data/in.ndjson, fromat: csv}"))
    with pytest.raises(ConfigErrors) as info:
        load_project(path, {})
    [error] = info.value.errors
    assert error.line == 4
    assert error.key == "routes.r.incoming.source.fromat"


def test_missing_key_is_named(tmp_path: Path) -> None:
    text = ROUTE.replace("    identifier: sku\n", "")
    [error] = errors_of(write(tmp_path, text))
    assert error.key == "routes.r.identifier"
    assert "required key is missing" in error.message
    assert error.line == 2  # the route that lacks it


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = ROUTE.replace("identifier: sku", "identifer: sku").replace(
        "    outgoing:", "    realtim: true\n    outgoing:"
    )
    errors = errors_of(write(tmp_path, text))
    keys = {e.key for e in errors}
    assert {"routes.r.identifer", "routes.r.realtim", "routes.r.identifier"} <= keys


def test_a_shape_error_does_not_hide_the_other_entries_errors(tmp_path: Path) -> None:
    """An unknown key in one entry stops nothing: the schedules, connectors and references of the other entries
    are checked too, and entries left out for their own errors are not reported again where they are used."""
    from crossdock.engine.project import load_project

    text = """\
connections:
  shop: {type: http, base_url: "http://127.0.0.1:1", bogus: 1}
transformers:
  odd: {steps: [], surprise: 1}
storages:
  prices: {ttl: 1h, colour: red}
routes:
  a:
    incoming: {source: {type: file, path: d.ndjson}}
    identifier: sku
    outgoing: {target: {type: noop}}
    bogus_key: 1
  b:
    incoming: {source: {type: nosuch}}
    identifier: sku
    transform: [{use: odd}, {lookup: {storage: prices, key: sku, into: price}}]
    outgoing: {target: {type: http, connection: shop, path: /x}}
  c:
    incoming: {source: {type: file, path: d.ndjson}, schedule: "99 * * * *"}
    identifier: sku
    outgoing: {target: {type: http, connection: nope, path: /x}}
  d:
    incoming: a
    identifier: sku
    outgoing: {target: {type: noop}}
"""
    with pytest.raises(ConfigErrors) as info:
        load_project(write(tmp_path, text), {})
    keys = [e.key for e in info.value.errors]
    # the shape errors first (one per entry left out), then what the other entries' checks found
    assert set(keys[:3]) == {"transformers.odd.surprise", "storages.prices.colour", "routes.a.bogus_key"}, keys
    assert set(keys[3:]) == {
        "connections.shop.bogus",
        "routes.b.incoming.source.type",
        "routes.c.incoming.schedule",
        "routes.c.outgoing.target.connection",
        "routes.d.incoming",  # no shared incoming named a: routes are not incomings
    }, keys


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("{steps: [], surprise: 1}", "transformers.t.surprise", "unknown key"),
        ("just text", "transformers.t", "must be a list of steps, or a mapping with steps:"),
    ],
)
def test_a_named_transformer_error_speaks_of_the_form_it_was_written_in(
    tmp_path: Path, body: str, key: str, message: str
) -> None:
    [error] = errors_of(write(tmp_path, f"transformers:\n  t: {body}\n" + ROUTE))
    assert error.key == key
    assert message in error.message
    assert "NamedTransformer" not in error.message and "list[any]" not in error.message


def test_env_value_is_substituted(tmp_path: Path) -> None:
    text = ROUTE.replace("data/in.ndjson", '"${DATA_DIR}/in.ndjson"')
    loaded = load_config(write(tmp_path, text), {"DATA_DIR": "/srv/data"})
    source = loaded.config.routes["r"].incoming.source  # type: ignore[union-attr]
    assert source.model_extra["path"] == "/srv/data/in.ndjson"


def test_missing_env_is_an_error_naming_the_variable_and_line(tmp_path: Path) -> None:
    text = "database: ${CD_UNIT_DB_URL}\n" + ROUTE
    [error] = errors_of(write(tmp_path, text))
    assert "CD_UNIT_DB_URL" in error.message
    assert error.line == 1
    assert error.key == "database"


def test_env_default_is_used_when_missing(tmp_path: Path) -> None:
    text = "database: ${CD_UNIT_DB_URL:-sqlite:///x.db}\n" + ROUTE
    assert load_config(write(tmp_path, text), {}).config.database == "sqlite:///x.db"
    assert load_config(write(tmp_path, text), {"CD_UNIT_DB_URL": "sqlite:///y.db"}).config.database == "sqlite:///y.db"
    empty_default = "database: ${CD_UNIT_DB_URL:-}\n" + ROUTE
    assert load_config(write(tmp_path, empty_default), {}).config.database == ""


def test_secret_values_from_env_are_collected_for_redaction(tmp_path: Path) -> None:
    text = 'connections:\n  shop: {type: http, base_url: "http://x", auth: {type: bearer, token: "${TOK}"}}\n' + ROUTE
    loaded = load_config(write(tmp_path, text), {"TOK": "s3cr3t-value"})
    assert "s3cr3t-value" in loaded.secrets


def test_include_merges_sections(tmp_path: Path) -> None:
    write(tmp_path, 'connections:\n  shop: {type: http, base_url: "http://x"}\n', "conns.yaml")
    (tmp_path / "routes").mkdir()
    write(tmp_path, ROUTE.replace("  r:", "  r2:").split("\n", 1)[1].join(["routes:\n", ""]), "routes/r2.yaml")
    loaded = load_config(write(tmp_path, "include: [conns.yaml, routes/*.yaml]\n" + ROUTE), {})
    assert set(loaded.config.routes) == {"r", "r2"}
    assert set(loaded.config.connections) == {"shop"}


def test_include_errors_name_the_included_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "routes:\n  r2:\n    identifier: sku\n    bogus: 1\n", "more.yaml")
    errors = errors_of(write(tmp_path, "include: [more.yaml]\n" + ROUTE))
    bogus = [e for e in errors if e.key == "routes.r2.bogus"]
    assert len(bogus) == 1, [e.message for e in errors]
    assert bogus[0].file is not None and bogus[0].file.endswith("more.yaml")
    assert bogus[0].line == 4


def test_include_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    [error] = errors_of(write(tmp_path, "include: [nope/*.yaml]\n" + ROUTE))
    assert "nope/*.yaml" in error.message
    assert error.line == 1


def test_include_defining_a_route_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, ROUTE, "dup.yaml")
    errors = errors_of(write(tmp_path, "include: [dup.yaml]\n" + ROUTE))
    assert any("defined twice" in e.message and e.file and e.file.endswith("dup.yaml") for e in errors)


def test_include_may_not_hold_other_sections(tmp_path: Path) -> None:
    write(tmp_path, "database: sqlite:///z.db\n", "db.yaml")
    errors = errors_of(write(tmp_path, "include: [db.yaml]\n" + ROUTE))
    assert any("database" in (e.key or "") and e.file and e.file.endswith("db.yaml") for e in errors)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("6h", 21600),
        ("1.5h", 5400),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        ("45", 45),
        (45, 45),
        (0.5, 0.5),
        ("0s", 0),
        (" 10s ", 10),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1h30m", "5 minutes", "abc", "", "-5s", "10y", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_duration_in_config_names_the_key(tmp_path: Path) -> None:
    text = ROUTE + "    retry: {max_attempts: 3, backoff: 5 minutes}\n"
    [error] = errors_of(write(tmp_path, text))
    assert error.key == "routes.r.retry.backoff"
    assert error.line == 8
    assert "5 minutes" in error.message


def test_durations_in_config_become_seconds(tmp_path: Path) -> None:
    text = ROUTE + "    retry: {max_attempts: 3, backoff: 250ms, max_backoff: 2h}\n"
    text = text.replace("target: {type: noop}", "target: {type: noop}\n      lease: 2s")
    route = load_config(write(tmp_path, text), {}).config.routes["r"]
    assert route.retry is not None
    assert route.retry.backoff == 0.25 and route.retry.max_backoff == 7200
    assert route.outgoing.lease == 2


def test_names_yaml_reads_as_booleans_numbers_or_null_say_so_and_how_to_quote_them(tmp_path: Path) -> None:
    route = (
        "    incoming: {source: {type: file, path: a.ndjson}}\n    identifier: sku\n"
        "    outgoing: {target: {type: noop}}\n"
    )
    path = write(
        tmp_path,
        "connections:\n  yes: {type: http, base_url: http://127.0.0.1:1}\n"
        f'routes:\n  off:\n{route}  "on":\n{route}  2024:\n{route}  ~:\n{route}  fine:\n{route}',
    )
    messages = [e.message.replace(str(tmp_path) + "/", "") for e in errors_of(path)]
    assert messages == [
        "crossdock.yaml:2: connections.yes: YAML reads the unquoted name yes as a boolean (True), not as a name; "
        'quote it: "yes":',
        "crossdock.yaml:4: routes.off: YAML reads the unquoted name off as a boolean (False), not as a name; "
        'quote it: "off":',
        "crossdock.yaml:12: routes.2024: YAML reads the unquoted name 2024 as a number (2024), not as a name; "
        'quote it: "2024":',
        'crossdock.yaml:16: routes.~: YAML reads the unquoted name ~ as null (None), not as a name; quote it: "~":',
    ]


NAMED = """\
connections:
  "yes": {type: http, base_url: http://127.0.0.1:1}
incomings:
  "off": {source: {type: file, path: a.ndjson}}
transformers:
  "no": [{set: {path: x, value: 1}}]
storages:
  "on": {}
routes:
  r1:
    incoming: off
    transform:
      - use: no
      - use: {name: no}
      - lookup: {storage: on, key: sku, into: y}
      - save: {storage: on, key: sku, value: y}
    identifier: sku
    outgoing: {target: {type: http, connection: yes, path: /x}}
alerts:
  channels:
    "off": {type: webhook, url: http://127.0.0.1:1/x}
  rules:
    - {event: task_failed, routes: [r1, 2024], channels: [off]}
"""


def test_references_yaml_reads_as_booleans_or_numbers_say_so_once_and_how_to_quote_them(tmp_path: Path) -> None:
    messages = [e.message.replace(str(tmp_path) + "/", "") for e in errors_of(write(tmp_path, NAMED))]
    unquoted = "YAML reads the unquoted"
    assert messages == [
        f"crossdock.yaml:11: routes.r1.incoming: {unquoted} off as a boolean (False), not as the name of a shared "
        'incoming; quote it: incoming: "off"',
        f"crossdock.yaml:13: routes.r1.transform[0].use: {unquoted} no as a boolean (False), not as the name of a "
        'transformer; quote it: use: "no"',
        f"crossdock.yaml:14: routes.r1.transform[1].use.name: {unquoted} no as a boolean (False), not as the name "
        'of a transformer; quote it: name: "no"',
        f"crossdock.yaml:15: routes.r1.transform[2].lookup.storage: {unquoted} on as a boolean (True), not as the "
        'name of a storage; quote it: storage: "on"',
        f"crossdock.yaml:16: routes.r1.transform[3].save.storage: {unquoted} on as a boolean (True), not as the "
        'name of a storage; quote it: storage: "on"',
        f"crossdock.yaml:18: routes.r1.outgoing.target.connection: {unquoted} yes as a boolean (True), not as the "
        'name of a connection; quote it: connection: "yes"',
        f"crossdock.yaml:23: alerts.rules[0].routes[1]: {unquoted} 2024 as a number (2024), not as the name of a "
        'route; quote it: "2024"',
        f"crossdock.yaml:23: alerts.rules[0].channels[0]: {unquoted} off as a boolean (False), not as the name of "
        'an alert channel; quote it: "off"',
        # a real error, not a follow-on of the unquoted name: there is no route 2024
        "crossdock.yaml:23: alerts.rules[0].routes: no route named '2024' (known: r1)",
    ]
    quoted = NAMED
    for before, after in [
        ("incoming: off", 'incoming: "off"'),
        ("use: no", 'use: "no"'),
        ("name: no", 'name: "no"'),
        ("storage: on", 'storage: "on"'),
        ("connection: yes", 'connection: "yes"'),
        ("[r1, 2024]", "[r1]"),
        ("[off]", '["off"]'),
    ]:
        quoted = quoted.replace(before, after)
    project = load_project(write(tmp_path, quoted), {})  # the second stage finds every name it refers to
    assert project.routes["r1"].incoming.name == "off"
    assert project.loaded.config.alerts.rules[0].channels == ["off"]


def test_misread_names_in_included_files_dates_and_alert_channels(tmp_path: Path) -> None:
    write(tmp_path, "routes:\n  off:\n    identifier: sku\n", "more.yaml")
    text = (
        "include: [more.yaml]\n"
        + ROUTE.replace("  r:", "  2024-01-31:")
        + "alerts:\n  channels:\n    no: {type: webhook, url: http://127.0.0.1:1/x}\n"
        '  rules:\n    - {event: task_failed, routes: ["off"], channels: ["no"]}\n'
    )
    messages = [e.message.replace(str(tmp_path) + "/", "") for e in errors_of(write(tmp_path, text))]
    assert messages == [
        "crossdock.yaml:3: routes.2024-01-31: YAML reads the unquoted name 2024-01-31 as a date (2024-01-31), not "
        'as a name; quote it: "2024-01-31":',
        "more.yaml:2: routes.off: YAML reads the unquoted name off as a boolean (False), not as a name; quote it: "
        '"off":',
        "crossdock.yaml:11: alerts.channels.no: YAML reads the unquoted name no as a boolean (False), not as a "
        'name; quote it: "no":',
    ], "the rule naming the misread route and channel is not reported again"


ALERTS = """\
alerts:
  channels:
    mail: {type: email, host: smtp.example.com, from: a@example.com, to: ops@example.com, password: pw-12345}
    chat: {type: slack, url: "https://hooks.slack.example/services/T/B/secret-path"}
  rules:
"""


def test_alerts_load_with_defaults_and_secrets(tmp_path: Path) -> None:
    text = (
        ROUTE
        + ALERTS
        + "    - {event: task_failed, routes: [r], channels: [mail, chat]}\n"
        + "    - {event: route_paused, channels: [chat]}\n"
    )
    loaded = load_config(write(tmp_path, text), {})
    alerts = loaded.config.alerts
    mail = alerts.channels["mail"]
    assert mail.type == "email" and mail.to == ["ops@example.com"] and mail.effective_port == 587
    assert [r.window for r in alerts.rules] == [300.0, 0.0]
    assert [alerts.rule_key(i) for i in range(2)] == ["task_failed#1", "route_paused#2"]
    assert {"pw-12345", "https://hooks.slack.example/services/T/B/secret-path"} <= loaded.secrets


@pytest.mark.parametrize(
    ("rule", "key", "says"),
    [
        (
            "{event: task_failed, channels: [pager]}",
            "alerts.rules[0].channels",
            "no channel named 'pager' under alerts.channels (known: chat, mail)",
        ),
        ("{event: backlog, channels: [mail]}", "alerts.rules[0]", "needs older_than"),
        ("{event: task_faild, channels: [mail]}", "alerts.rules[0].event", "task_failed"),
        ("{event: task_failed, routes: [nope], channels: [mail]}", "alerts.rules[0].routes", "no route named 'nope'"),
        ("{event: task_failed, digest: soon, channels: [mail]}", "alerts.rules[0].digest", "not a duration"),
    ],
)
def test_alert_config_errors_name_the_key(tmp_path: Path, rule: str, key: str, says: str) -> None:
    [error] = errors_of(write(tmp_path, ROUTE + ALERTS + f"    - {rule}\n"))
    assert error.key == key, error.message
    assert says in error.message


def test_an_alert_channel_of_unknown_type_says_which_types_exist(tmp_path: Path) -> None:
    text = ROUTE + "alerts:\n  channels:\n    pager: {type: pagerduty, key: x}\n"
    [error] = errors_of(write(tmp_path, text))
    assert error.key is not None and error.key.startswith("alerts.channels.pager")
    assert "email" in error.message and "webhook" in error.message and "slack" in error.message
