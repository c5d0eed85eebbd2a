"""An example crossdock target: prints each entity as one JSON line on stdout or stderr.

It shows the whole plugin contract in one screen: an options model (unknown keys are config errors), a
``deliver`` that returns :class:`Delivered` or raises :class:`TransientError` / :class:`PermanentError`, and an
optional ``deliver_batch``. The engine, not the plugin, turns those errors into retry or failed tasks.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import orjson

from crossdock.connectors.base import Delivered, Options, Target, idempotency_key
from crossdock.errors import PermanentError, TransientError
from crossdock.tasks import Task

__all__ = ["StdoutTarget", "StdoutTargetOptions"]


class StdoutTargetOptions(Options):
    type: Literal["stdout"] = "stdout"
    #: where the lines go
    stream: Literal["stdout", "stderr"] = "stdout"
    #: put before each line, e.g. "order: "
    prefix: str = ""
    #: wrap each entity as {"key": <idempotency key>, "entity": ...}, as a real target would send the key along
    with_key: bool = False


class StdoutTarget(Target):
    """Prints entities; useful to watch a route's output while building it."""

    options_model = StdoutTargetOptions
    options: StdoutTargetOptions

    async def deliver(self, task: Task, entity: Any) -> Delivered:
        payload = {"key": idempotency_key(task), "entity": entity} if self.options.with_key else entity
        try:
            line = self.options.prefix + orjson.dumps(payload).decode()
        except TypeError as exc:  # bad data: trying again will not help
            raise PermanentError(f"entity is not JSON-serialisable: {exc}") from None
        stream = sys.stdout if self.options.stream == "stdout" else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except OSError as exc:  # a closed pipe may be back next time
            raise TransientError(f"cannot write to {self.options.stream}: {exc}") from None
        return Delivered(details={"stream": self.options.stream}, message=f"printed to {self.options.stream}")
