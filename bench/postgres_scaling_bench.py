"""Worker scale-out on PostgreSQL: N ``crossdock worker`` processes deliver 20,000 tasks to the mock shop
(``--workers``, default 1 2 4); then claim + settle with a no-op target (``--noop-workers``, default 2).

Method (as ``bench/worker_bench.py``, whose helpers it imports): the shop runs in its own process
(``python -m crossdock.mock shop --no-record-bodies``, ``--processes N`` with ``--shop-processes N``); each run
gets a fresh database on the server, the tasks are imported with the CLI (not timed), then N
``crossdock worker --db postgresql://...`` processes are spawned. Two rates per run:

- *spawn*: tasks / wall time from spawning the workers until the counters say every task is finished
  (Python start-up included, like ``worker_bench.py``);
- *steady*: tasks settled / time from the first settled task to the last (start-up excluded).

The shop's ``Idempotency-Key`` counts give the duplicates (a multi-process shop keeps no keys: there, accepted
records beyond the task count). Each row is run ``--repeat`` times and the run with the better spawn rate is
kept; every run is printed, and the 1-minute load average is sampled when each run ends (the machine is shared).

Run::

    PYTHONPATH=src .venv/bin/python bench/postgres_scaling_bench.py \
        [--server postgresql://postgres@127.0.0.1:5432/postgres] [--tasks 20000] [--workers 1 2 4] \
        [--concurrency 32] [--shop-processes 1] [--noop-tasks 100000] [--noop-workers 2] [--repeat 2]

The 1 to 16 worker curve of both scenarios (#18 item 5), 2 vCPU (AMD EPYC), Python 3.11.7, PostgreSQL 15
with default settings on the same host, 2026-12-05 03:30-03:37 UTC::

    PYTHONPATH=src .venv/bin/python bench/postgres_scaling_bench.py --workers 1 2 4 8 12 16 --tasks 20000 \
        --shop-processes 2 --noop-workers 1 2 4 8 12 16 --noop-tasks 100000 --repeat 2

Steady tasks/s, the higher of the 2 runs, and the speed-up over 1 worker:

==========================  =============  =============  =============  =============  =============  =============
 scenario                    1              2              4              8              12             16
==========================  =============  =============  =============  =============  =============  =============
 no-op claim + settle        18,457 (1.00)  34,890 (1.89)  32,471 (1.76)  23,121 (1.25)  14,779 (0.80)  13,584 (0.74)
 PUT, 2-process mock shop    1,602 (1.00)   2,322 (1.45)   2,363 (1.48)   1,726 (1.08)   1,677 (1.05)   1,654 (1.03)
==========================  =============  =============  =============  =============  =============  =============

The other run of each pair: no-op 18,065 / 32,375 / 27,733 / 16,452 / 13,467 / 11,740; shop 1,562 / 2,242 /
1,756 / 1,685 / 1,618 / 1,445. 1-minute load 1.2-17.6, mostly the bench itself (N workers, their PostgreSQL
backends, the shop); another engineer's PostgreSQL test runs overlapped the no-op rows with 8, 12 and 16
workers. In all 24 runs: 0 duplicates, 0 tasks left in ``processing``, every worker exited 0 after SIGTERM.
A second session right after (03:38-03:46 UTC), from 8 shop workers on beside another engineer's PostgreSQL
partition benchmark, gave no-op 15,858 / 21,063 / 16,092 / 14,523 / 10,126 / 11,696 and shop 1,611 / 2,428 /
2,167 / 1,726 / 1,477 / 1,475 (the same shape, lower; 0 duplicates and 0 in ``processing`` again).
Reading: on 2 cores both curves stop at 2 workers. The cores carry PostgreSQL, the workers and (for the shop
rows) the two shop processes, so from 2 workers on every added worker only shares the same CPU, and past 4 the
extra processes and backends cost more than they add. The curve says nothing about claim contention on many
cores; the 16-core figures are in ``bench/README.md``.

Earlier figures (1, 2 and 4 shop workers with a one-process shop, no-op with 2 workers), measured at an
earlier commit on 2026-11-25, before the claim turns of #18 item 1:

Measured on the development container then: 2 vCPU (shared with the shop process, PostgreSQL 15 on the same host
and other people's test runs), Python 3.11, default server settings, loopback HTTP, route ``concurrency: 32``,
no global ``--concurrency``; better of two runs:

Two sessions of ``--repeat 2`` (the second re-ran 4 workers and the no-op row because the first 4-worker
runs overlapped this repository's test suite, load 7.1-7.7: 916 and 1,382 tasks/s); best run per row:

==========  =======  =============  ==============  ==========  ==========  ===================
 target     workers  spawn tasks/s  steady tasks/s  duplicates  processing  load avg (1 min)
==========  =======  =============  ==============  ==========  ==========  ===================
 mock shop  1        2,468          2,700           0           0           4.8
 mock shop  2        2,397          2,707           0           0           3.8
 mock shop  4        1,703          3,031           0           0           4.9
 no-op      2        18,899         21,787          0           0           5.2
==========  =======  =============  ==============  ==========  ==========  ===================

(20,000 tasks per shop row, 100,000 for the no-op row; every worker exited 0 after SIGTERM.)

Reading: on this host the shop rows are CPU-bound, not database-bound: two cores carry the workers, the
single-process shop, PostgreSQL and everyone else's jobs (load 4-5). A second worker adds nothing, four add
steady throughput (3,031/s) but lose it again to four Python start-ups in the spawn figure. No run delivered
a key twice or left a task in ``processing``. Claim + settle through the real worker path with a no-op target
meets the 20,000 tasks/s target in steady state (21,787/s with 2 workers), and comes close including
start-up (18,899/s for 100,000 tasks); the store-only figure is in ``bench/postgres_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_bench import SRC, env, free_port, http, wait_up

sys.path.insert(0, str(SRC))
import psycopg

from crossdock.store import open_store

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CLI = [sys.executable, "-m", "crossdock.cli"]

SHOP_CONFIG = """\
connections:
  shop: {{type: http, base_url: "{shop}", timeout: 30s}}
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
      batch_size: 5000
    identifier: sku
    delta: false
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: {concurrency}
"""

NOOP_CONFIG = """\
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
      batch_size: 5000
    identifier: sku
    delta: false
    outgoing:
      target: {{type: noop}}
      concurrency: {concurrency}
"""


def create_database(server: str) -> str:
    name = f"crossdock_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def drop_database(server: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def one_run(
    kind: str, workers: int, tasks: int, concurrency: int, shop: str | None, server: str, root: Path
) -> dict[str, Any]:
    root.mkdir()
    with (root / "products.ndjson").open("w") as f:
        for i in range(tasks):
            f.write(f'{{"sku": "SKU-{i:07d}", "name": "product {i}", "price": {i}}}\n')
    template = SHOP_CONFIG if kind == "shop" else NOOP_CONFIG
    (root / "crossdock.yaml").write_text(template.format(shop=shop, concurrency=concurrency))
    url = create_database(server)
    try:
        subprocess.run(
            [*CLI, "run", "to-shop", "--incoming", "--db", url], cwd=root, env=env(), check=True, capture_output=True
        )
        if shop is not None:
            http("POST", shop + "/_reset")
        store = open_store(url)
        assert store.stats().by_status["new"] == tasks
        quiet = subprocess.DEVNULL
        started = time.perf_counter()
        procs = [
            subprocess.Popen([*CLI, "worker", "--db", url], cwd=root, env=env(), stdout=quiet, stderr=quiet)
            for _ in range(workers)
        ]
        first: tuple[float, int] | None = None
        try:
            while True:
                done = store.stats().by_status["finished"]
                now = time.perf_counter()
                if first is None and done > 0:
                    first = (now, done)
                if done >= tasks:
                    break
                if now - started > 600:
                    raise SystemExit(f"{kind} x{workers}: only {done} of {tasks} finished after 600 s")
                time.sleep(0.02)
            wall = now - started
            load = os.getloadavg()[0]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            codes = [p.wait(timeout=60) for p in procs]
        assert first is not None
        steady_s = max(now - first[0], 1e-6)
        counts = store.stats().by_status
        store.close()
        dupes = 0
        if shop is not None:
            stats = http("GET", shop + "/_stats")
            # a multi-process shop keeps no keys: a duplicate shows as more accepted records than tasks
            dupes = stats["duplicate_keys"] if "duplicate_keys" in stats else stats["accepted"] - tasks
        return {
            "kind": kind,
            "workers": workers,
            "wall_s": round(wall, 2),
            "spawn_per_s": round(tasks / wall),
            "steady_per_s": round((tasks - first[1]) / steady_s) if tasks > first[1] else None,
            "duplicates": dupes,
            "processing": counts["processing"],
            "load1": round(load, 2),
            "exit_codes": codes,
        }
    finally:
        drop_database(server, url)


def fmt(row: dict[str, Any]) -> str:
    steady = f"{row['steady_per_s']:,}" if row["steady_per_s"] is not None else "-"
    target = "mock shop" if row["kind"] == "shop" else "no-op"
    return (
        f"{target:>10}  {row['workers']:>7}  {row['spawn_per_s']:>11,}  {steady:>11}  {row['wall_s']:>7}  "
        f"{row['duplicates']:>10}  {row['processing']:>10}  {row['load1']:>6}  {row['exit_codes']}"
    )


HEADER = (
    f"{'target':>10}  {'workers':>7}  {'spawn t/s':>11}  {'steady t/s':>11}  {'wall s':>7}  "
    f"{'duplicates':>10}  {'processing':>10}  {'load1':>6}  exit codes"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("CROSSDOCK_TEST_POSTGRES") or SERVER)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--noop-tasks", type=int, default=100_000)
    parser.add_argument("--noop-workers", type=int, nargs="+", default=[2], help="worker counts for the no-op rows")
    parser.add_argument("--noop-concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--shop-processes",
        type=int,
        default=1,
        help="serve the mock shop from N processes (so many workers measure crossdock, not one shop process)",
    )
    args = parser.parse_args()
    port = free_port()
    shop_url = f"http://127.0.0.1:{port}"
    shop = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crossdock.mock",
            "shop",
            "--port",
            str(port),
            "--no-record-bodies",
            "--processes",
            str(args.shop_processes),
        ],
        env=env(),
        stdout=subprocess.DEVNULL,
    )
    best: list[dict[str, Any]] = []
    plan: list[tuple[str, int, int, int, str | None]] = [
        ("shop", n, args.tasks, args.concurrency, shop_url) for n in args.workers
    ]
    if args.noop_tasks:
        plan += [("noop", n, args.noop_tasks, args.noop_concurrency, None) for n in args.noop_workers]
    try:
        wait_up(shop_url)
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("every run:\n" + HEADER, flush=True)
        with tempfile.TemporaryDirectory(prefix="crossdock-pgbench-") as tmp:
            for kind, workers, tasks, concurrency, shop_arg in plan:
                runs = []
                for attempt in range(args.repeat):
                    root = Path(tmp) / f"{kind}-w{workers}-{attempt}"
                    row = one_run(kind, workers, tasks, concurrency, shop_arg, args.server, root)
                    print(fmt(row), flush=True)
                    runs.append(row)
                best.append(max(runs, key=lambda r: r["spawn_per_s"]))
        print(f"\nbetter of {args.repeat} runs:\n" + HEADER)
        for row in best:
            print(fmt(row))
    finally:
        shop.terminate()
        shop.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
