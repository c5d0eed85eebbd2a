"""SFTP in and out (asyncssh): the file source and target, over SSH, with the same formats and options.

The source downloads one matching file at a time to a private temporary folder and reads it with the local
parsers (so memory stays flat and the file cannot change under the parser); after-read actions and remembered
content hashes wait for the run's commit, exactly as for local files. The target uploads each batch to a hidden
temporary name and renames it into place; SFTP's rename does not overwrite, so a taken name gets ``-1``, ``-2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import asyncssh
from pydantic import model_validator

from crossdock.connectors.base import BatchTarget, ConnectorContext, Delivered, Options, Source
from crossdock.connectors.files import (
    HandledFile,
    ImportedFiles,
    ReadOptions,
    WriteOptions,
    batch_path,
    file_digest,
    files_report,
    record_pages,
    render_batch,
    settle_outcomes,
)
from crossdock.errors import PermanentError, SourceError, TransientError
from crossdock.tasks import Task

log = logging.getLogger("crossdock.connectors.sftp")


class SftpConnectionOptions(Options):
    """An SSH server to reach over SFTP: key or password auth, with the host key checked."""

    type: Literal["sftp"] = "sftp"
    host: str
    port: int = 22
    username: str
    password: str | None = None
    #: a private key: a file path (relative to the project folder) or the key text itself
    private_key: str | None = None
    passphrase: str | None = None
    #: a known_hosts file (relative to the project folder); default ``~/.ssh/known_hosts``
    known_hosts: str | None = None
    #: do not check the server's host key at all: for tests only, it allows a man in the middle
    insecure_skip_host_key: bool = False
    connect_timeout: float = 30.0

    @model_validator(mode="after")
    def _auth(self) -> SftpConnectionOptions:
        if not self.password and not self.private_key:
            raise ValueError("give password: or private_key: (a key file or the key text)")
        if self.known_hosts and self.insecure_skip_host_key:
            raise ValueError("known_hosts: and insecure_skip_host_key: true exclude each other")
        return self


class _Remote:
    """One SSH connection with its SFTP session, opened on first use."""

    def __init__(self, name: str, options: SftpConnectionOptions, root: Path) -> None:
        self.name = name
        self.options = options
        self.root = root
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, context: ConnectorContext, connection: str) -> _Remote:
        return cls(connection, context.connection(connection, SftpConnectionOptions, "sftp"), context.root)

    def _key(self) -> asyncssh.SSHKey | None:
        text = self.options.private_key
        if not text:
            return None
        if "-----BEGIN" in text:
            return asyncssh.import_private_key(text, self.options.passphrase)
        return asyncssh.read_private_key(self.root / text, self.options.passphrase)

    async def sftp(self) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is None:
                o = self.options
                known: Any = (
                    None if o.insecure_skip_host_key else (str(self.root / o.known_hosts) if o.known_hosts else ())
                )
                key = self._key()
                self._conn = await asyncssh.connect(
                    o.host,
                    o.port,
                    username=o.username,
                    password=o.password,
                    client_keys=[key] if key is not None else None,
                    known_hosts=known,
                    agent_path=None,
                    config=None,
                    connect_timeout=o.connect_timeout,
                )
                self._sftp = await self._conn.start_sftp_client()
            return self._sftp

    async def close(self) -> None:
        sftp, conn, self._sftp, self._conn = self._sftp, self._conn, None, None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    def where(self) -> str:
        return f"sftp://{self.options.username}@{self.options.host}:{self.options.port}"


# --- source ------------------------------------------------------------------------------------------------------


class SftpSourceOptions(ReadOptions):
    type: Literal["sftp"] = "sftp"
    #: the name of an ``sftp`` connection under ``connections:``
    connection: str


class SftpSource(Source):
    """Files on an SFTP server matching a path or glob (relative to the login folder)."""

    options_model = SftpSourceOptions
    options: SftpSourceOptions

    def __init__(self, options: SftpSourceOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._remote = _Remote.of(context, options.connection)
        self._imported = ImportedFiles.of(context, options)
        self._handled: list[HandledFile] = []
        self._scratch: str | None = None

    def describe(self) -> str:
        return f"sftp {self.options.connection}:{self.options.path}"

    async def _files(self, sftp: asyncssh.SFTPClient) -> list[str]:
        pattern = self.options.path
        if glob.has_magic(pattern):
            found = [p if isinstance(p, str) else p.decode() for p in await sftp.glob(pattern, error_handler=False)]
            return sorted([p for p in found if await sftp.isfile(p)])
        if await sftp.isfile(pattern):
            return [pattern]
        if self.options.after != "keep":
            log.info("%s: not there; nothing to import", pattern)
            return []
        raise SourceError(f"source file {pattern} not found on {self._remote.where()}")

    async def pages(self) -> AsyncIterator[list[Any]]:
        self._scratch = tempfile.mkdtemp(prefix="crossdock-sftp-")
        try:
            sftp = await self._remote.sftp()
            remotes = await self._files(sftp)
        except (OSError, asyncssh.Error) as exc:
            raise SourceError(f"cannot list {self.options.path} on {self._remote.where()}: {_why(exc)}") from None
        for remote in remotes:
            name = posixpath.basename(remote)
            local = Path(self._scratch) / name
            try:
                await sftp.get(remote, local)
            except (OSError, asyncssh.Error) as exc:
                raise SourceError(f"cannot download {remote} from {self._remote.where()}: {_why(exc)}") from None
            try:
                size = local.stat().st_size
                digest = None
                if self._imported is not None:
                    digest = await asyncio.to_thread(file_digest, local)
                    if self._imported.already(digest, remote):
                        self._handled.append(HandledFile(remote, name, size, digest, read=False))
                        continue
                for page in record_pages(local, self.options):
                    yield page
                    await asyncio.sleep(0)
                self._handled.append(HandledFile(remote, name, size, digest, read=True))
            finally:
                local.unlink(missing_ok=True)

    async def commit(self) -> None:
        """The run committed every record: remember the hashes, then delete or move the remote files."""
        for handled in self._handled:
            if self._imported is not None and handled.digest is not None and handled.read:
                self._imported.remember(handled.digest, handled.location, handled.size)
            try:
                await self._after(handled.location)
            except (OSError, asyncssh.Error) as exc:
                raise SourceError(
                    f"{handled.location}: records imported, but after: {self.options.after} failed: {_why(exc)}"
                ) from None

    async def _after(self, remote: str) -> None:
        if self.options.after == "keep":
            return
        sftp = await self._remote.sftp()
        if self.options.after == "delete":
            await sftp.remove(remote)
            return
        folder = self.options.move_to or posixpath.join(posixpath.dirname(remote), "processed")
        await sftp.makedirs(folder, exist_ok=True)
        dest = await _free_remote(sftp, posixpath.join(folder, posixpath.basename(remote)))
        await sftp.rename(remote, dest)
        log.info("%s: moved to %s", remote, dest)

    def report(self) -> dict[str, Any]:
        return files_report(self._handled)

    async def close(self) -> None:
        await self._remote.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


async def _free_remote(sftp: asyncssh.SFTPClient, path: str) -> str:
    stem, ext = posixpath.splitext(path)
    candidate, n = path, 0
    while await sftp.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


# --- target ------------------------------------------------------------------------------------------------------


class SftpTargetOptions(WriteOptions):
    type: Literal["sftp"] = "sftp"
    #: the name of an ``sftp`` connection under ``connections:``
    connection: str

    @model_validator(mode="after")
    def _no_append(self) -> SftpTargetOptions:
        if self.mode == "append":
            raise ValueError("mode: append is not offered over SFTP (it cannot be atomic); use file_per_batch")
        return self

    @property
    def resolved_mode(self) -> str:
        return "file_per_batch"


class SftpTarget(BatchTarget):
    """Uploads one file per batch: a hidden temp name, then a rename; tasks finish only after the rename."""

    options_model = SftpTargetOptions
    options: SftpTargetOptions

    def __init__(self, options: SftpTargetOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        self._remote = _Remote.of(context, options.connection)

    def describe(self) -> str:
        return f"sftp {self.options.connection}:{self.options.path}"

    async def close(self) -> None:
        await self._remote.close()

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        rendered = render_batch(self.options, items)
        if not rendered.written:
            return settle_outcomes(rendered, None, {}, "")
        name = batch_path(self.options, [t for t, _ in items])
        error: Exception | None = None
        dest = name
        try:
            dest = await self._upload(name, rendered.data)
        except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable, asyncssh.SFTPPermissionDenied) as exc:
            error = PermanentError(f"cannot write {name} on {self._remote.where()}: {_why(exc)}")
        except (OSError, asyncssh.Error) as exc:
            # the connection may be broken: start a fresh one for the next batch
            await self._remote.close()
            error = TransientError(f"cannot write {name} on {self._remote.where()}: {_why(exc)}")
        details = {"file": dest, "server": self._remote.where()}
        return settle_outcomes(rendered, error, details, f"written to {dest} on {self._remote.where()}")

    async def _upload(self, name: str, data: bytes) -> str:
        sftp = await self._remote.sftp()
        folder, base = posixpath.split(name)
        if folder:
            await sftp.makedirs(folder, exist_ok=True)
        temp = posixpath.join(folder, f".{base}.{uuid.uuid4().hex[:12]}.part")
        try:
            async with sftp.open(temp, "wb") as handle:
                await handle.write(data)
                if self.options.fsync:
                    with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                        await handle.fsync()
            stem, ext = posixpath.splitext(name)
            dest, n = name, 0
            while True:
                try:
                    await sftp.rename(temp, dest)  # plain SFTP rename: refuses to overwrite
                    return dest
                except asyncssh.SFTPError:
                    if not await sftp.exists(dest):
                        raise
                    n += 1
                    dest = f"{stem}-{n}{ext}"
        except BaseException:
            with contextlib.suppress(Exception):
                await sftp.remove(temp)
            raise


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return f"{type(exc).__name__}: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
