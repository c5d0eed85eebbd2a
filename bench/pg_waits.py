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

Measured on the development container (2 vCPU shared with other people's test runs, PostgreSQL 15 on the same
host, default settings, route ``concurrency: 64``), 2026-12-05 02:08-02:35 UTC, the commit before #18's changes
(``before``) and after them alternating, 8 and 12 workers, 10 and 13 runs per row; medians (range):

==================================  ==================  ==================  ==================  ==================
 share of backend samples            8 before            8 after             12 before           12 after
==================================  ==================  ==================  ==================  ==================
 LWLock:BufferContent (claims)       7.5 % (6.2-8.5)     0.0 %               7.5 % (5.3-7.9)     0.0 %
 Lock:transactionid (settles)        1.6 % (1.2-2.5)     0.0 %               2.9 % (1.6-4.5)     0.0 %
 idle in transaction                 8.8 % (7.5-9.4)     2.4 % (2.0-3.8)     10.2 % (8.5-12.2)   2.5 % (1.4-3.5)
 active on CPU                       15.1 % (13.4-16.4)  8.6 % (6.2-9.7)     11.1 % (9.5-12.3)   5.9 % (5.4-6.9)
 Lock:advisory (claim turn queue)    -                   30.2 % (27.5-31.2)  -                   34.8 % (32.9-37.0)
 server CPU per 200,000 tasks        5.8 s (5.6-5.9)     4.95 s (4.8-5.1)    6.2 s (6.0-6.6)     5.25 s (5.1-5.6)
 backends                            19 (17-21)          17                  29 (25-32)          25
 steady tasks/s                      38,169              40,704              31,624              32,685
                                     (32,883-43,027)     (28,558-45,737)     (22,202-36,571)     (26,438-42,656)
 load average (1 min) at the end     4.4 (1.6-5.9)       3.9 (1.6-5.8)       6.7 (4.7-7.8)       6.8 (5.2-7.9)
==================================  ==================  ==================  ==================  ==================

With 2 workers on a quieter host (load 1.1-1.7, 3 runs each): 46,541 -> 53,541 tasks/s steady (medians), server
CPU 5.0-5.2 -> 4.5-4.6 s; with 4 workers (load 1.7-2.1) 49,593 -> 48,030, the same, CPU 5.1-5.2 -> 4.6-4.7 s.

With 8 and 12 workers the rate cannot grow on two cores (the worker processes' Python is the limit: ~55 % of
the backend samples are idle sessions waiting for their client), so the rate stays within the noise; the waits
and the server's CPU are what changed. One run of each, 12 workers (``before``: the claims walk each other's
rows; ``after``: they queue for their route's turn, and nothing else waits)::

    before   no-op  12  spawn 20,542  steady 31,732  wall 9.74 s  duplicates 0  processing 0  load1 6.46
    100 samples, 1893 backend samples (avg 18.9 backends, peak 27)
    server CPU of the bench database's backends: 6.3 s (27 backends)
      state                wait                                share
      idle                 Client:ClientRead                   61.1%
      idle in transaction  Client:ClientRead                   12.2%
      active               CPU (no wait)                       11.6%
      active               LWLock:BufferContent                 5.3%
      active               Client:ClientRead                    3.2%
      active               Lock:transactionid                   1.6%
      active               IO:WALSync                           1.2%
      waited-on statements (samples):
            99  LWLock:BufferContent         claim (new)
            31  Lock:transactionid           UPDATE tasks SET status
            22  IO:WALSync                   COMMIT
            12  LWLock:LockManager           claim (new)
             7  Lock:extend                  claim (new)
      ungranted locks (samples):
            30  transactionid  ShareLock            -
            11  extend         ExclusiveLock        tasks
      lock waits by blocker (samples): waiting statement <- blocker's state, its last statement
            19  UPDATE tasks SET status  <- active               claim (new)
            13  UPDATE tasks SET status  <- idle in transaction  claim (new)
             7  claim (new)              <- active               UPDATE tasks SET status
             6  UPDATE tasks SET status  <- active               UPDATE tasks SET status
             5  claim (new)              <- active               claim (new)
      idle in transaction, after (samples):
            61  INSERT counters
            57  BEGIN
            44  claim (new)
            29  UPDATE tasks SET status
            21  COPY task_logs

    after    no-op  12  spawn 20,399  steady 26,438  wall 9.8 s  duplicates 0  processing 0  load1 6.21
    124 samples, 2440 backend samples (avg 19.7 backends, peak 25)
    server CPU of the bench database's backends: 5.3 s (25 backends)
      state                wait                                share
      idle                 Client:ClientRead                   55.5%
      active               Lock:advisory                       32.9%
      active               CPU (no wait)                        6.1%
      idle in transaction  Client:ClientRead                    2.6%
      active               Client:ClientRead                    1.0%
      active               IO:WALSync                           0.5%
      waited-on statements (samples):
           802  Lock:advisory                WITH prev AS MATERIALIZED (SELECT current_settin   [the claim turn]
            12  IO:WALSync                   COMMIT
             2  IO:DataFilePrefetch          claim (new)
      ungranted locks (samples):
           796  advisory       ExclusiveLock        -
             1  extend         ExclusiveLock        tasks
      lock waits by blocker (samples): ("claim turn" stands for the label above, shortened here)
          3265  claim turn <- active               claim turn   (pg_blocking_pids names every claim ahead)
           600  claim turn <- active               claim (new)
            61  claim turn <- active               COMMIT
            29  claim turn <- idle in transaction  claim (new)

Reading: before, every claim started at the head of ``tasks_due_new`` together with the others. It walked the
rows the other claims held (SKIP LOCKED: a heap fetch and a tuple-lock try each; LWLock:BufferContent and
LockManager), and rows another claim had taken after its snapshot, which ``FOR UPDATE`` locks in their newest
(processing) version before the recheck drops them: the owner's settle then waited for that claim's whole
transaction (``UPDATE tasks SET status <- claim (new)``, Lock:transactionid). Hot counter rows came second:
``INSERT counters`` waited on Lock:transactionid in 4-10 samples a run with 8 workers and 14-31 with 12, against
80-167 for the claims' BufferContent; after, 0-2. Now a claim first takes its route's transaction advisory lock.
The turn is held mostly by the claim statement itself (about 9 ms per 1,000 tasks here, measured alone; 14 ms for
the whole claim), so one route's claims top out near 1,000 tasks per turn, 70,000-100,000 tasks/s on this CPU
for a batch of 1,000 (the no-op target's); different routes claim side by side.
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
