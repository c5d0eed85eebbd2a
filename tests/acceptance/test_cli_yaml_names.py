"""`crossdock check` on names YAML 1.1 reads as booleans, numbers or dates: one error each, saying how to quote."""

from __future__ import annotations

from typing import Any

CONFIG = """\
include: [more.yaml]
connections:
  yes: {type: http, base_url: http://127.0.0.1:1}
incomings:
  "off": {source: {type: file, path: a.ndjson}}
storages:
  on: {}
routes:
  r1:
    incoming: off
    transform:
      - lookup: {storage: on, key: sku, into: y}
    identifier: sku
    outgoing: {target: {type: http, connection: yes, path: /x}}
"""

MORE = """\
routes:
  no:
    incoming: {source: {type: file, path: a.ndjson}}
    identifier: sku
    outgoing: {target: {type: noop}}
"""


def test_check_names_every_misread_name_and_reference_once(project: Any) -> None:
    project.write_config(CONFIG)
    project.write("more.yaml", MORE)
    result = project.cli("check", expect=2)
    errors = [line.replace(f"{project.root}/", "") for line in result.stderr.splitlines()]
    says = "YAML reads the unquoted"
    assert errors == [
        f"config error: crossdock.yaml:3: connections.yes: {says} name yes as a boolean (True), not as a name; quote "
        'it: "yes":',
        f"config error: crossdock.yaml:7: storages.on: {says} name on as a boolean (True), not as a name; quote it: "
        '"on":',
        f'config error: more.yaml:2: routes.no: {says} name no as a boolean (False), not as a name; quote it: "no":',
        f"config error: crossdock.yaml:10: routes.r1.incoming: {says} off as a boolean (False), not as the name of a "
        'shared incoming; quote it: incoming: "off"',
        f"config error: crossdock.yaml:12: routes.r1.transform[0].lookup.storage: {says} on as a boolean (True), not "
        'as the name of a storage; quote it: storage: "on"',
        f"config error: crossdock.yaml:14: routes.r1.outgoing.target.connection: {says} yes as a boolean (True), not "
        'as the name of a connection; quote it: connection: "yes"',
    ], result.stderr
    assert "Input should be a valid string" not in result.stderr

    quoted = CONFIG
    for word in ("yes", "on", "off"):
        quoted = quoted.replace(f"  {word}:", f'  "{word}":').replace(f": {word}", f': "{word}"')
    project.write_config(quoted)
    project.write("more.yaml", MORE.replace("  no:", '  "no":'))
    assert "crossdock.yaml: ok (2 route(s)" in project.cli("check").stdout
