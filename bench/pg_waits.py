"""What N ``crossdock worker`` processes wait on in PostgreSQL (#18): the no-op scenario of
``bench/postgres_scaling_bench.py`` (its ``one_run``) with 8 and 12 workers and 200,000 tasks, while a sampler
thread polls ``pg_stat_activity`` and ``pg_locks`` of the bench database every 50 ms.

Each sample records, per client backend of the bench database (the sampler's own excluded): its state
(``active``, ``idle in transaction`` = the worker holds a transaction open while Python runs, ``idle``), its wait
event (none while active = on CPU or waiting for one), and the first words of its statement; and every ungranted
lock by type, mode and relation. The table gives each (state, wait) as a share of all backend samples, the
statements that waited (any wait but ``Client:ClientRead`` of an idle session) and the ungranted locks.

Run::

    PYTHONPATH=src .venv/bin/python bench/pg_waits.py [--workers 8 12] [--tasks 200000] [--interval 0.05]

Results: see the end of this docstring (filled in from the runs recorded in bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import postgres_scaling_bench as scaling
import psycopg

SAMPLE_ACTIVITY = """
SELECT state, wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 200), pid
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
SAMPLE_BLOCKERS = """
SELECT left(regexp_replace(a.query, '\\s+', ' ', 'g'), 200), b.state,
       left(regexp_replace(b.query, '\\s+', ' ', 'g'), 200)
FROM pg_stat_activity a CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
"""
SAMPLE_LOCKS = """
SELECT l.locktype, l.mode, coalesce(c.relname, '-') FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
WHERE NOT l.granted
"""


def statement(query: str) -> str:
    """A short name for a statement: the table it writes or the query it starts with."""
    q = query.strip()
    m = re.search(r"INSERT INTO (\w+)", q)
    if m:
        return f"INSERT {m.group(1)}"
    if q.startswith("WITH due AS"):
        return "claim (" + ("retry" if "'retry'" in q else "new") + ")"
    m = re.match(r"UPDATE (\w+) \w+ SET (\w+)", q)
    if m:
        return f"UPDATE {m.group(1)} SET {m.group(2)}"
    m = re.match(r"COPY (\w+)", q)
    if m:
        return f"COPY {m.group(1)}"
    return q[:48]


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU of a local process in clock ticks (None when it is gone or not visible)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


class Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.url: str | None = None
        self.stop = threading.Event()
        self.samples = 0
        self.backend_samples = 0
        self.waits: Counter[tuple[str, str]] = Counter()
        self.statements: Counter[tuple[str, str]] = Counter()
        self.locks: Counter[tuple[str, str, str]] = Counter()
        #: (waiting statement, blocker's state, blocker's statement) of every lock wait
        self.blockers: Counter[tuple[str, str, str]] = Counter()
        #: the statement last run by a session idle in a transaction (the step its client is between)
        self.idle_in_tx: Counter[str] = Counter()
        self.peak_backends = 0
        #: backend pid -> its CPU time so far (clock ticks; the server runs on this host), last seen
        self.cpu: dict[int, int] = {}

    def run(self) -> None:
        while self.url is None and not self.stop.is_set():
            time.sleep(0.01)
        if self.url is None:
            return
        started = False
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    rows = conn.execute(SAMPLE_ACTIVITY).fetchall()
                    locks = conn.execute(SAMPLE_LOCKS).fetchall()
                    waiting = any(r[1] == "Lock" for r in rows)
                    blockers = conn.execute(SAMPLE_BLOCKERS).fetchall() if waiting else []
                except psycopg.Error:  # the bench dropped the database (WITH FORCE)
                    return
                busy = [r for r in rows if r[0] != "idle"]
                # from the workers' first claim on (the import before it is not measured); a sample with no
                # transaction open anywhere says nothing
                started = started or any((r[3] or "").startswith("WITH due AS") for r in rows)
                if started and busy:
                    self.samples += 1
                    self.peak_backends = max(self.peak_backends, len(rows))
                    for state, wtype, wevent, query, pid in rows:
                        ticks = cpu_ticks(pid)
                        if ticks is not None:
                            self.cpu[pid] = ticks
                        self.backend_samples += 1
                        wait = f"{wtype}:{wevent}" if wtype else "CPU (no wait)"
                        self.waits[(state or "?", wait)] += 1
                        if state != "idle" and wtype and wevent != "ClientRead":
                            self.statements[(statement(query or ""), wait)] += 1
                        if state == "idle in transaction":
                            self.idle_in_tx[statement(query or "")] += 1
                    for waiter, bstate, bquery in blockers:
                        self.blockers[(statement(waiter or ""), bstate or "?", statement(bquery or ""))] += 1
                    for lock in locks:
                        self.locks[lock] += 1
                time.sleep(self.interval)


def report(sampler: Sampler, top: int = 12) -> str:
    out = []
    n = max(sampler.backend_samples, 1)
    out.append(
        f"{sampler.samples} samples, {sampler.backend_samples} backend samples "
        f"(avg {sampler.backend_samples / max(sampler.samples, 1):.1f} backends, peak {sampler.peak_backends})"
    )
    if sampler.cpu:
        seconds = sum(sampler.cpu.values()) / os.sysconf("SC_CLK_TCK")
        out.append(f"server CPU of the bench database's backends: {seconds:.1f} s ({len(sampler.cpu)} backends)")
    out.append(f"  {'state':<20} {'wait':<34} {'share':>6}")
    for (state, wait), k in sampler.waits.most_common(top):
        out.append(f"  {state:<20} {wait:<34} {100 * k / n:5.1f}%")
    out.append("  waited-on statements (samples):")
    for (stmt, wait), k in sampler.statements.most_common(top):
        out.append(f"    {k:>6}  {wait:<28} {stmt}")
    out.append("  ungranted locks (samples):")
    for (locktype, mode, rel), k in sampler.locks.most_common(top):
        out.append(f"    {k:>6}  {locktype:<14} {mode:<20} {rel}")
    out.append("  lock waits by blocker (samples): waiting statement <- blocker's state, its last statement")
    for (waiter, bstate, bstmt), k in sampler.blockers.most_common(top):
        out.append(f"    {k:>6}  {waiter:<24} <- {bstate:<20} {bstmt}")
    out.append("  idle in transaction, after (samples):")
    for stmt, k in sampler.idle_in_tx.most_common(top):
        out.append(f"    {k:>6}  {stmt}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CROSSDOCK_TEST_POSTGRES") or scaling.SERVER)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 12])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows: list[dict[str, Any]] = []
    create = scaling.create_database
    with tempfile.TemporaryDirectory(prefix="crossdock-pgwaits-") as tmp:
        for workers in args.workers:
            sampler = Sampler(args.interval)

            def created(server: str, sampler: Sampler = sampler) -> str:
                url = create(server)
                sampler.url = url
                return url

            scaling.create_database = created  # type: ignore[assignment]
            sampler.start()
            try:
                row = scaling.one_run(
                    "noop", workers, args.tasks, args.concurrency, None, args.server, Path(tmp) / f"w{workers}"
                )
            finally:
                sampler.stop.set()
                sampler.join(timeout=5)
                scaling.create_database = create  # type: ignore[assignment]
            rows.append(row)
            print("\n" + scaling.HEADER + "\n" + scaling.fmt(row), flush=True)
            print(report(sampler), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
