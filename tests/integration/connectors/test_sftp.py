"""SFTP source and target against a real asyncssh SFTP server on loopback, rooted at a temporary folder."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.store import Store, open_store
from crossdock.store.base import TaskFilter
from crossdock.tasks import Status

USER, PASSWORD = "partner", "s3cret-pw"
PRODUCTS = [{"sku": f"S-{i}", "name": f"thing {i}", "stock": i} for i in range(5)]


@dataclass
class Server:
    port: int
    root: Path
    client_key: asyncssh.SSHKey
    host_key: asyncssh.SSHKey


def _run_server(root: Path, client_key: asyncssh.SSHKey, host_key: asyncssh.SSHKey) -> Iterator[Server]:
    """Serve SFTP from a thread with its own event loop (the importer runs its own with asyncio.run)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    class Auth(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == USER and password == PASSWORD

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return username == USER and key.public_data == client_key.public_data

    def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    async def start() -> None:
        holder["server"] = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[host_key], server_factory=Auth, sftp_factory=sftp_factory
        )
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    server = holder["server"]
    try:
        yield Server(server.sockets[0].getsockname()[1], root, client_key, host_key)
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def keys() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    return asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def sftp(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> Iterator[Server]:
    root = tmp_path / "remote"
    root.mkdir()
    yield from _run_server(root, *keys)


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


def make_project(folder: Path, connection: str, source: str, target: str = "{type: noop}") -> tuple[Project, Store]:
    (folder / "crossdock.yaml").write_text(
        f"connections:\n  partner: {connection}\n"
        f"routes:\n  r:\n    incoming: {{source: {source}}}\n    identifier: sku\n"
        f"    outgoing: {{target: {target}, batch_size: 100}}\n"
    )
    project = load_project(folder / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    store.ensure_routes(project.routes)
    return project, store


def password_connection(server: Server) -> str:
    return (
        f"{{type: sftp, host: 127.0.0.1, port: {server.port}, username: {USER}, password: {PASSWORD},"
        " insecure_skip_host_key: true}"
    )


def key_connection(server: Server, folder: Path) -> str:
    """Key auth, and the host key checked against a known_hosts file."""
    (folder / "id_partner").write_bytes(server.client_key.export_private_key())
    line = f"[127.0.0.1]:{server.port} {server.host_key.export_public_key().decode().strip()}\n"
    (folder / "known_hosts").write_text(line)
    return (
        f"{{type: sftp, host: 127.0.0.1, port: {server.port}, username: {USER}, private_key: id_partner,"
        " known_hosts: known_hosts}"
    )


def entities(store: Store) -> dict[str, Any]:
    tasks, _ = store.list_tasks(TaskFilter(route="r"), limit=1000)
    return {t.identifier or str(t.id): t.entity for t in tasks}


def ndjson(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.mark.parametrize("auth", ["password", "key"])
def test_source_reads_moves_and_skips_imported_files(sftp: Server, project_dir: Path, auth: str) -> None:
    inbox = sftp.root / "outbox"
    inbox.mkdir()
    (inbox / "a.ndjson").write_text(ndjson(PRODUCTS[:3]))
    (inbox / "b.csv").write_text("sku,name,stock\nS-3,thing 3,3\nS-4,thing 4,4\n")
    connection = password_connection(sftp) if auth == "password" else key_connection(sftp, project_dir)
    project, store = make_project(
        project_dir, connection, "{type: sftp, connection: partner, path: 'outbox/*.*', after: move}"
    )
    first = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert (first["status"], first["read"]) == ("ok", 5), first["error"]
    assert first["source"] == {"files_read": 2, "files_skipped": 0}
    assert sorted(entities(store)) == ["S-0", "S-1", "S-2", "S-3", "S-4"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.ndjson", "b.csv"]
    assert sorted(p.name for p in inbox.iterdir()) == ["processed"]

    # the partner uploads the same file again, and a changed one
    (inbox / "a.ndjson").write_text(ndjson(PRODUCTS[:3]))
    (inbox / "c.ndjson").write_text(ndjson([{"sku": "S-9", "name": "new"}]))
    second = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert second["source"] == {"files_read": 1, "files_skipped": 1}
    assert second["read"] == 1 and "S-9" in entities(store)
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a-1.ndjson", "a.ndjson", "b.csv", "c.ndjson"]
    store.close()


def test_source_xml_with_delete_and_a_failed_run_keeps_the_file(sftp: Server, project_dir: Path) -> None:
    (sftp.root / "feed.xml").write_text(
        "<catalog><product><sku>X-1</sku></product><product><sku>X-2</sku></product></catalog>"
    )
    (sftp.root / "broken.xml").write_text("<catalog><product><sku>X-3</sku></product><product><sku>X-4</sku>")
    connection = password_connection(sftp)
    project, store = make_project(
        project_dir, connection, "{type: sftp, connection: partner, path: '*.xml', record: product, after: delete}"
    )
    result = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert result["status"] == "failed"
    assert "broken.xml: malformed XML at line 1" in result["error"]
    assert (sftp.root / "feed.xml").exists() and (sftp.root / "broken.xml").exists()
    assert sorted(entities(store)) == ["X-3"], "what was read before the error is committed"
    (sftp.root / "broken.xml").unlink()
    again = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert again["status"] == "ok"
    assert sorted(entities(store)) == ["X-1", "X-2", "X-3"]
    assert not (sftp.root / "feed.xml").exists()
    store.close()


@pytest.mark.parametrize(("move_to", "folder"), [("archive/2024", "archive/2024"), ("/done", "done")])
def test_move_to_starts_at_the_login_folder_not_at_the_file(
    sftp: Server, project_dir: Path, move_to: str, folder: str
) -> None:
    """What docs/connectors-files.md says: a relative move_to is relative to the login folder (here the server's
    root), like path; an absolute one is the server's path as written."""
    inbox = sftp.root / "outbox"
    inbox.mkdir()
    (inbox / "a.ndjson").write_text(ndjson(PRODUCTS[:2]))
    project, store = make_project(
        project_dir,
        password_connection(sftp),
        f"{{type: sftp, connection: partner, path: 'outbox/*.ndjson', after: move, move_to: '{move_to}'}}",
    )
    result = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert (result["status"], result["read"]) == ("ok", 2), result["error"]
    assert [p.name for p in (sftp.root / folder).iterdir()] == ["a.ndjson"]
    assert sorted(p.name for p in inbox.iterdir()) == [], "nothing is moved beside the file"
    store.close()


def test_wrong_password_fails_the_run_clearly(sftp: Server, project_dir: Path) -> None:
    connection = password_connection(sftp).replace(PASSWORD, "nope")
    project, store = make_project(project_dir, connection, "{type: sftp, connection: partner, path: '*.ndjson'}")
    result = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert result["status"] == "failed"
    assert "sftp://partner@127.0.0.1" in result["error"] and "PermissionDenied" in result["error"]
    store.close()


def test_an_unknown_host_key_is_refused(sftp: Server, project_dir: Path) -> None:
    connection = key_connection(sftp, project_dir)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    (project_dir / "known_hosts").write_text(f"[127.0.0.1]:{sftp.port} {other}")
    project, store = make_project(project_dir, connection, "{type: sftp, connection: partner, path: '*.ndjson'}")
    result = asyncio.run(run_once(project, store, "r", outgoing=False))["incoming"]
    assert result["status"] == "failed" and "HostKeyNotVerifiable" in result["error"]
    store.close()


@pytest.mark.parametrize("auth", ["password", "key"])
@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json"])
def test_target_writes_one_file_per_batch_atomically(sftp: Server, project_dir: Path, auth: str, fmt: str) -> None:
    (project_dir / "in.ndjson").write_text(ndjson(PRODUCTS))
    connection = password_connection(sftp) if auth == "password" else key_connection(sftp, project_dir)
    columns = ", columns: [sku, name, stock]" if fmt == "csv" else ""
    project, store = make_project(
        project_dir,
        connection,
        "{type: file, path: in.ndjson}",
        f"{{type: sftp, connection: partner, path: 'drop/products-{{date}}.{fmt}'{columns}}}",
    )
    assert asyncio.run(run_once(project, store, "r"))["by_status"]["finished"] == 5
    # a second outgoing run the same day: its own file, under a free name (nothing is overwritten)
    (project_dir / "in.ndjson").write_text(ndjson([{"sku": f"T-{i}", "stock": i} for i in range(145)]))
    result = asyncio.run(run_once(project, store, "r"))
    assert result["by_status"]["finished"] == 150, result
    files = sorted((sftp.root / "drop").iterdir())
    # two files, and no temp files left
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert {p.name for p in files} == {f"products-{day}.{fmt}", f"products-{day}-1.{fmt}"}
    rows: list[Any] = []
    for path in files:
        text = path.read_text()
        if fmt == "ndjson":
            rows += [json.loads(line) for line in text.splitlines()]
        elif fmt == "json":
            rows += json.loads(text)
        else:
            lines = text.splitlines()
            assert lines[0] == "sku,name,stock"
            rows += [dict(zip(["sku", "name", "stock"], line.split(","), strict=True)) for line in lines[1:]]
    assert sorted(r["sku"] for r in rows) == sorted([p["sku"] for p in PRODUCTS] + [f"T-{i}" for i in range(145)])
    task = store.list_tasks(TaskFilter(route="r", statuses=[Status.FINISHED]), limit=1)[0][0]
    logs = store.task_logs(task.id)
    assert any("written to drop/products-" in line.message for line in logs)
    store.close()


def test_target_unreachable_server_is_transient(project_dir: Path) -> None:
    (project_dir / "in.ndjson").write_text(ndjson(PRODUCTS))
    project, store = make_project(
        project_dir,
        f"{{type: sftp, host: 127.0.0.1, port: 1, username: {USER}, password: x, insecure_skip_host_key: true}}",
        "{type: file, path: in.ndjson}",
        "{type: sftp, connection: partner, path: 'out-{run}.ndjson'}",
    )
    (project_dir / "crossdock.yaml").write_text(
        (project_dir / "crossdock.yaml").read_text() + "    retry: {max_attempts: 3, backoff: 60s}\n"
    )
    project = load_project(project_dir / "crossdock.yaml")
    result = asyncio.run(run_once(project, store, "r"))
    assert result["by_status"]["retry"] == len(PRODUCTS)
    task = store.list_tasks(TaskFilter(route="r"), limit=1)[0][0]
    assert task.error is not None and "cannot write out-" in task.error
    store.close()


def test_append_mode_is_refused_over_sftp(sftp: Server, project_dir: Path) -> None:
    from crossdock.errors import ConfigErrors

    with pytest.raises(ConfigErrors, match="mode: append is not offered over SFTP"):
        make_project(
            project_dir,
            password_connection(sftp),
            "{type: file, path: in.ndjson}",
            "{type: sftp, connection: partner, path: out.ndjson, mode: append}",
        )
