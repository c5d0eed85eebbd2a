"""``${file:PATH}`` in crossdock.yaml: the text of a secret file, always redacted, with errors naming file:line:key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crossdock.config import load_config
from crossdock.config.loader import read_database
from crossdock.config.yamlsource import MAX_SECRET_FILE
from crossdock.engine.project import load_project
from crossdock.errors import ConfigError, ConfigErrors
from crossdock.redact import Redactor

TOKEN = "tok-3f9a-from-a-file"

CONFIG = """\
connections:
  shop:
    type: http
    base_url: http://127.0.0.1:1
    headers: {X-Shop-Key: "VALUE"}
routes:
  r:
    incoming: {source: {type: file, path: in.ndjson}}
    identifier: sku
    outgoing: {target: {type: http, connection: shop, path: /x}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    (folder / "secrets").mkdir(parents=True)
    return folder


def write_config(folder: Path, value: str, text: str = CONFIG) -> Path:
    path = folder / "crossdock.yaml"
    path.write_text(text.replace("VALUE", value), encoding="utf-8")
    return path


def header(path: Path, environ: dict[str, str] | None = None) -> Any:
    loaded = load_config(path, environ if environ is not None else {})
    return loaded.config.connections["shop"].model_extra["headers"]["X-Shop-Key"]  # type: ignore[index]


def errors_of(path: Path, environ: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path, environ if environ is not None else {})
    return list(info.value.errors)


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (TOKEN + "\n", TOKEN),  # echo, Docker and Kubernetes leave one newline
        (TOKEN + "\r\n", TOKEN),  # written on Windows
        (TOKEN, TOKEN),
        (TOKEN + "\n\n", TOKEN + "\n"),  # one line break only
        (f"  {TOKEN} \n", f"  {TOKEN} "),  # nothing else is stripped
        ("${HOME}-literal\n", "${HOME}-literal"),  # the file's text is not interpolated again
    ],
)
def test_the_file_text_less_one_line_break(project: Path, content: str, value: str) -> None:
    (project / "secrets" / "shop_key").write_bytes(content.encode())
    path = write_config(project, "${file:secrets/shop_key}")
    assert header(path) == value


def test_a_relative_path_starts_at_the_project_folder_also_in_an_included_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (project / "secrets" / "shop_key").write_text(TOKEN)
    (project / "conf").mkdir()
    (project / "conf" / "conns.yaml").write_text(
        'connections:\n  shop: {type: http, base_url: http://x, headers: {X-Shop-Key: "${file:secrets/shop_key}"}}\n'
    )
    routes = CONFIG.split("routes:", 1)[1]
    path = project / "crossdock.yaml"
    path.write_text("include: [conf/*.yaml]\nroutes:" + routes)
    monkeypatch.chdir(tmp_path)  # not the project folder
    assert header(path) == TOKEN


def test_an_absolute_path_and_variables_in_the_path(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "run-secrets"
    elsewhere.mkdir()
    (elsewhere / "shop_key").write_text(TOKEN + "\n")
    assert header(write_config(project, f"${{file:{elsewhere}/shop_key}}")) == TOKEN
    path = write_config(project, "Key ${file:${SECRETS_DIR:-/nowhere}/shop_key}!")
    assert header(path, {"SECRETS_DIR": str(elsewhere)}) == f"Key {TOKEN}!"
    [error] = errors_of(write_config(project, "${file:${SECRETS_DIR}/shop_key}"))
    assert "environment variable SECRETS_DIR is not set" in error.message


def test_a_file_value_is_a_secret_whatever_its_key(project: Path) -> None:
    (project / "secrets" / "shop_key").write_text(TOKEN + "\n")
    loaded = load_config(write_config(project, "${file:secrets/shop_key}"), {})
    assert TOKEN in loaded.secrets
    assert Redactor(loaded.secrets)(f"answer: {{'X-Shop-Key': '{TOKEN}'}}") == "answer: {'X-Shop-Key': '***'}"


def test_an_env_value_is_a_secret_when_its_key_or_its_variable_looks_secret(project: Path) -> None:
    environ = {"SHOP_TOKEN": "env-token-value", "SHOP_KEY_VALUE": "plain-value"}
    loaded = load_config(write_config(project, "${SHOP_TOKEN}"), environ)
    assert "env-token-value" in loaded.secrets
    loaded = load_config(write_config(project, "${SHOP_KEY_VALUE}"), environ)
    assert "plain-value" not in loaded.secrets, "an ordinary name under an ordinary key: shown as it is"


def test_a_file_value_is_masked_in_config_errors(project: Path) -> None:
    (project / "secrets" / "timeout").write_text("not-a-duration-but-secret\n")
    path = write_config(project, "x", CONFIG.replace("    headers:", '    timeout: "${file:secrets/timeout}"\n#'))
    with pytest.raises(ConfigErrors) as info:
        load_project(path, {})
    [error] = info.value.errors
    assert error.key == "connections.shop.timeout"
    assert "not-a-duration-but-secret" not in error.message and "'***' is not a duration" in error.message


def test_the_database_key_alone_reads_its_file_and_knows_the_secret(project: Path) -> None:
    (project / "secrets" / "db_password").write_text("db-pw-from-file\n")
    path = write_config(project, "x", "database: postgresql://cd:${file:secrets/db_password}@db/cd\n" + CONFIG)
    url, secrets = read_database(path, {})
    assert url == "postgresql://cd:db-pw-from-file@db/cd"
    assert "db-pw-from-file" in secrets


def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "secrets" / "fifo")
    return "${file:secrets/fifo}"


def _big(folder: Path) -> str:
    (folder / "secrets" / "big").write_bytes(b"a" * (MAX_SECRET_FILE + 1))
    return "${file:secrets/big}"


def _binary(folder: Path) -> str:
    (folder / "secrets" / "bin").write_bytes(b"\xff\xfe\x00")
    return "${file:secrets/bin}"


def _empty(folder: Path) -> str:
    (folder / "secrets" / "empty").write_text("\n")
    return "${file:secrets/empty}"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda f: "${file:secrets/missing}", "/proj/secrets/missing; create it or mount the secret there, or correct"),
        (lambda f: "${file:secrets}", "/proj/secrets is a directory; name the file inside it that holds the secret"),
        (_fifo, "/proj/secrets/fifo is not a regular file; point at the file that holds the secret"),
        (_big, "holds 65537 bytes, over the 64 KiB a secret file may hold; point at the file that holds only"),
        (_binary, "/proj/secrets/bin is not UTF-8 text"),
        (_empty, "/proj/secrets/empty is empty; write the secret into it"),
        (lambda f: "${file:/run/secrets/shop_key:-fallback}", "a secret file takes no :-default"),
        (lambda f: "${file:}", "write the path of the file that holds the secret: ${file:PATH}"),
        (lambda f: "${file:secrets/shop_key", "a ${file:...} reference is not closed; write ${file:PATH}"),
        (lambda f: "${file:${file:secrets/x}}", "write the path of the file that holds the secret"),
    ],
)
def test_unusable_files_are_errors_naming_file_line_key_and_what_to_do(project: Path, make: Any, says: str) -> None:
    path = write_config(project, make(project))
    [error] = errors_of(path)
    assert (error.file, error.line, error.key) == (str(path), 5, "connections.shop.headers.X-Shop-Key")
    assert says in error.message, error.message


def test_a_file_of_exactly_the_limit_is_read(project: Path) -> None:
    (project / "secrets" / "big").write_bytes(b"b" * MAX_SECRET_FILE)
    assert len(header(write_config(project, "${file:secrets/big}"))) == MAX_SECRET_FILE


def test_an_unreadable_file_says_who_must_be_let_read_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "secrets" / "shop_key").write_text(TOKEN)
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "shop_key":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)  # as root, chmod 000 would not stop the test
    [error] = errors_of(write_config(project, "${file:secrets/shop_key}"))
    assert "cannot read" in error.message and "let the user running crossdock read it" in error.message
