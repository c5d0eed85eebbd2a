"""The SQL target through the real CLI: 1,000 rows into PostgreSQL and MariaDB, with 0 and with 2 bad rows.

Each run is a fresh project folder and a fresh table (``sku`` key, ``name NOT NULL``, ``price``); the bad rows
have no name. The clock is the wall time of ``python -m crossdock.cli run r --json`` (interpreter start, the
import of the file and the export together); the export pass's own ``duration_s`` is reported beside it, and so
are the stderr lines that are not crossdock's own (psycopg's "error ignored terminating <psycopg.Pipeline>").

Run::

    PYTHONPATH=src python bench/sql_target_bench.py [--repeat 5] [--backend postgresql --backend mariadb]
    # the code before a change, from an exported tree: git archive COMMIT src | tar -x -C /tmp/old
    PYTHONPATH=src python bench/sql_target_bench.py --src /tmp/old/src

Measured on 2026-12-05 (2 vCPU shared with other engineers' work, load 1.4-2.2), Python 3.11.7, PostgreSQL 15,
MariaDB 10.11, two rounds alternating the commit before (row by row after a failed batch; psycopg's pipelined
executemany on PostgreSQL) and after (halving; multi-row INSERTs), each the median of 5 (``--repeat 5``).
Seconds of the whole ``run`` (export pass in brackets):

==========  ====  ==============================  ==============================  ======================
 database    bad   before                          after                           stderr before / after
==========  ====  ==============================  ==============================  ======================
 PostgreSQL  0     0.75 (0.137), 0.84 (0.159)      0.81 (0.160), 0.92 (0.182)      0 / 0
 PostgreSQL  2     1.74 (1.100), 2.02 (1.347)      1.00 (0.276), 1.00 (0.281)      1 / 0
 MariaDB     0     0.70 (0.086), 0.80 (0.106)      0.75 (0.096), 0.92 (0.131)      0 / 0
 MariaDB     2     1.71 (1.086), 2.11 (1.345)      0.81 (0.137), 0.83 (0.150)      0 / 0
==========  ====  ==============================  ==============================  ======================

Issue #19 quoted 7.5 s for the before case with two bad rows, measured elsewhere. About 0.6 s of each run is
the interpreter starting and importing crossdock. With two bad rows, the export does 39 INSERTs instead of
1,001 transactions. Without bad rows, PostgreSQL's export is ~20 ms slower per 1,000 rows: psycopg parses the
3,000 placeholders of a multi-row statement in Python (~12 ms), where its pipelined executemany sent one small
prepared statement per row; that pipeline is what printed "error ignored terminating <psycopg.Pipeline ...>:
pipeline aborted" whenever a row failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

SRC = Path(__file__).resolve().parent.parent / "src"
SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +crossdock[\w.]*: ")


def one_run(url: str, rows: int, bad: int, src: Path) -> dict[str, Any]:
    """A fresh project and table; the CLI's run of them, timed."""
    meta = sa.MetaData()
    table = sa.Table(
        f"cd_bench_{uuid.uuid4().hex[:10]}",
        meta,
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("price", sa.Numeric(10, 2)),
    )
    engine = sa.create_engine(url)
    meta.create_all(engine)
    bad_at = {rows * (i + 1) // (bad + 1) for i in range(bad)}
    try:
        with tempfile.TemporaryDirectory(prefix="crossdock-sql-bench-") as folder:
            root = Path(folder)
            with open(root / "in.ndjson", "wb") as f:
                for i in range(1, rows + 1):
                    record = {"sku": f"S-{i:06d}", "name": None if i in bad_at else f"Product {i}", "price": f"{i}.50"}
                    f.write(orjson.dumps(record) + b"\n")
            (root / "crossdock.yaml").write_text(
                "routes:\n  r:\n    incoming: {source: {type: file, path: in.ndjson}}\n    identifier: sku\n"
                f'    outgoing:\n      target: {{type: sql, url: "{url}", table: {table.name}, key: [sku]}}\n'
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSDOCK_")}
            env["PYTHONPATH"] = str(src)
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "crossdock.cli", "run", "r", "--json"],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - started
        summary = json.loads(proc.stdout)
        with engine.connect() as conn:
            written = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    finally:
        meta.drop_all(engine)
        engine.dispose()
    foreign = [line for line in proc.stderr.splitlines() if line.strip() and not OWN_LINE.match(line)]
    return {
        "wall_s": wall,
        "export_s": summary["outgoing"]["duration_s"],
        "finished": summary["by_status"]["finished"],
        "failed": summary["by_status"]["failed"],
        "rows": written,
        "stderr_lines": len(foreign),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", action="append", choices=sorted(SERVERS), help="default: both")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--bad", type=int, action="append", help="bad rows per run (default: 0 and 2)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--src", type=Path, default=SRC, help="the crossdock source tree the CLI runs from")
    args = parser.parse_args()
    print(f"crossdock from {args.src}; {args.rows} rows; median of {args.repeat}; load {os.getloadavg()[0]:.2f}")
    print(f"{'database':<11} {'bad':>3}  {'run s':>6} {'export s':>8}  {'range run s':<13} finished failed rows stderr")
    for backend in args.backend or sorted(SERVERS):
        for bad in args.bad or [0, 2]:
            runs = [one_run(SERVERS[backend], args.rows, bad, args.src) for _ in range(args.repeat)]
            walls = [r["wall_s"] for r in runs]
            last = runs[-1]
            print(
                f"{backend:<11} {bad:>3}  {statistics.median(walls):6.2f} "
                f"{statistics.median(r['export_s'] for r in runs):8.3f}  "
                f"{min(walls):.2f}-{max(walls):.2f}     {last['finished']:>8} {last['failed']:>6} {last['rows']:>4} "
                f"{max(r['stderr_lines'] for r in runs):>6}"
            )


if __name__ == "__main__":
    main()
