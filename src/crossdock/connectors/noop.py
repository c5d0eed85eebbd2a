"""The no-op target: accepts everything."""

from __future__ import annotations

from typing import Any, Literal

from crossdock.connectors.base import Delivered, Options, Target
from crossdock.tasks import Task


class NoopTargetOptions(Options):
    type: Literal["noop"] = "noop"


class NoopTarget(Target):
    """Accepts everything: for routes whose transformers did the work, and for benchmarks."""

    options_model = NoopTargetOptions
    supports_batch = True
    _DONE = Delivered(message="accepted (noop target)")

    async def deliver(self, task: Task, entity: Any) -> Delivered:
        return self._DONE

    async def deliver_batch(self, items: list[tuple[Task, Any]]) -> list[Delivered | Exception]:
        return [self._DONE] * len(items)
