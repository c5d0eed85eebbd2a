"""The mock shop in several processes on one port (``python -m crossdock.mock shop --processes N``), so a
benchmark of many crossdock workers measures crossdock, not one Python process answering every request.

Each process binds the port with ``SO_REUSEPORT`` and the kernel spreads the connections. The counts every
process keeps (requests, accepted records, answers per status) live in one shared array, a row per process that
only its process writes, so ``GET /_stats`` on any of them answers for all. Bodies and idempotency keys stay in
the process that got them; with more than one process the shop counts only (as ``--no-record-bodies``), and a
duplicate delivery shows as more accepted records than tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from aiohttp import web

#: slots per process: requests, accepted, then one per answer status 0..599 (0: connection dropped)
_ROW = 2 + 600


class SharedCounters:
    """Counters of every process of a multi-process shop; :meth:`for_process` gives the row one process writes."""

    def __init__(self, processes: int, array: SynchronizedArray[Any] | None = None, row: int = 0) -> None:
        self.processes = processes
        self.array = array if array is not None else multiprocessing.get_context("fork").Array("q", processes * _ROW)
        self.row = row

    def for_process(self, row: int) -> SharedCounters:
        return SharedCounters(self.processes, self.array, row)

    def add(self, status: int, *, requests: int = 1, accepted: int = 0) -> None:
        """Count in this process's row (one writer per row: no lock needed)."""
        base = self.row * _ROW
        raw: Any = self.array.get_obj()
        raw[base] += requests
        raw[base + 1] += accepted
        raw[base + 2 + max(0, min(status, 599))] += requests

    def totals(self) -> dict[str, Any]:
        raw = list(self.array.get_obj())
        by_status: dict[str, int] = {}
        per_process = []
        for row in range(self.processes):
            base = row * _ROW
            per_process.append(raw[base])
            for status in range(600):
                n = raw[base + 2 + status]
                if n:
                    by_status[str(status)] = by_status.get(str(status), 0) + n
        return {
            "requests": sum(per_process),
            "accepted": sum(raw[row * _ROW + 1] for row in range(self.processes)),
            "by_status": dict(sorted(by_status.items(), key=lambda kv: int(kv[0]))),
            "processes": self.processes,
            "requests_per_process": per_process,
        }

    def reset(self) -> None:
        raw: Any = self.array.get_obj()
        for i in range(len(raw)):
            raw[i] = 0


def serve_processes(build: Callable[[SharedCounters], web.Application], *, host: str, port: int, processes: int) -> int:
    """Run ``processes`` copies of the app on ``host:port`` until SIGINT or SIGTERM; 0 when all stopped cleanly."""
    if port == 0:
        raise SystemExit("--processes needs a fixed --port: the processes share it")
    counters = SharedCounters(processes)
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_child, args=(build, counters.for_process(i), host, port), name=f"mock-shop-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def stop(_signum: int, _frame: Any) -> None:
        for child in children:
            if child.is_alive():
                os.kill(child.pid or 0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()
    return 0 if all(child.exitcode == 0 for child in children) else 1


def _child(build: Callable[[SharedCounters], web.Application], counters: SharedCounters, host: str, port: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent passes Ctrl-C on as SIGTERM
    # SIGTERM ends run_app cleanly (its own handler); then this process exits 0
    web.run_app(build(counters), host=host, port=port, reuse_port=True, access_log=None, print=None)
    sys.exit(0)
