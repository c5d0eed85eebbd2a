"""Delta detection against a peer: crossdock's importer vs a dlt merge pipeline, in one run.

Figures (2026-11-25 ~18:35 UTC, after SQLite migration 0005 (poll touches decided in SQL, kept in task_seen);
Python 3.11.7, 2-vCPU dev container, 24 GiB, nothing else running; dlt 1.31.0 + duckdb 2.0.1; ``--repeat 1``).
**The sizes differ**: crossdock imported 1,000,000 and 100,000 records, dlt 100,000 (dlt at 1,000,000 would take
minutes a load and ~25 GB); rates are per record, RSS is the child's peak in MB::

    load                   crossdock 1M          crossdock 100k       dlt 100k              x 1M/dlt  x same N  mem 1/x
    a  first import        122,790  116MB 1.33   97,235  112MB 1.33   3,935  2578MB 1.35    31.2      24.7      23.1
       deliver all (noop)   60,798   79MB 1.46   79,168   78MB 1.46   -
    b  unchanged            97,234  115MB 1.39   89,921  115MB 1.36   4,016  2576MB 1.24    24.2      22.4      22.5
    b2 unchanged again     250,309  109MB 1.22  240,848  109MB 1.22   -
    c  1% changed          201,281  113MB 1.20  219,675  110MB 1.20   4,566  2578MB 1.14    44.1      48.1      23.4

Checks passed: (c) created exactly 10,000 new tasks at 1M (1,000 at 100k), (b2) added no rows, dlt kept exactly
N rows after every merge. Goal (>= 10x speed, <= 1/10 memory): met on every load (24-44x faster at 1M, 22-48x at
equal N; 22-23x less memory). Earlier the same day: 21.6x / 15.9x / 19.8x (before 0005), and 13.4x / 8.0x /
14.1x (before migration 0004).
(b) is crossdock's slowest re-import because "unchanged after finished" writes one skipped task per record, with
the entity cached for ``tasks retry``. dlt's peak RSS grows with N (282 MB at 5,000 records,
2.6 GB at 100,000) and does not fall on re-loads: it normalizes and merges every row each time (no per-record
delta), so (b) and (c) cost it as much as (a).

Three loads of the same NDJSON product records (~250 bytes each, ``bench/common.py`` ``write_ndjson``):

(a) first import; (b) unchanged re-import; (c) 1% changed re-import (every 100th record changed and, as in
``bench/import_bench.py`` phase 5, every 10th with its keys reversed, which must not count as a change).

crossdock: a ``file`` source with ``identifier: sku``, ``batch_size: 5000``, SQLite, ``noop`` target, exactly the
phases of ``bench/import_bench.py``: after (a) everything is delivered with the no-op target so (b) exercises
"unchanged after finished" (one skipped task per record); then a second unchanged re-import (b2) that must add no
rows; (c) must create exactly ``N / 100`` new tasks. dlt: ``@dlt.resource(write_disposition="merge",
primary_key="sku")`` yielding the parsed lines of the same file, into duckdb. dlt has no per-record delta
detection: every load normalizes and merges all N rows (delete-insert on the primary key).

Every load runs in a fresh child process (crossdock with the project's ``.venv`` Python, dlt with
``/tmp/peers-venv``); records/s is timed inside the child around the import call / ``pipeline.run`` only (no
interpreter start-up, no module imports), peak RSS is the child's ``ru_maxrss`` from ``wait4``. The whole
sequence runs twice (fresh databases) and the better figure of each load is kept; crossdock and dlt are
interleaved load by load so both see the same machine load. The 1-minute load average after each kept
measurement is printed next to it.

Run (from the repository root; see ``bench/requirements-peers.txt`` for the peer venv)::

    python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install -r bench/requirements-peers.txt
    .venv/bin/python bench/peers/dlt_delta_bench.py            # crossdock 1,000,000 + 100,000, dlt 100,000
    .venv/bin/python bench/peers/dlt_delta_bench.py --records 100000 --dlt-records 20000   # quicker

"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CROSSDOCK_PYTHON = str(REPO / ".venv" / "bin" / "python")
PEERS_PYTHON = "/tmp/peers-venv/bin/python"

CONFIG = """\
database: sqlite:///bench.db
routes:
  products:
    incoming:
      source: {{type: file, path: "{path}"}}
      batch_size: 5000
    identifier: sku
    outgoing:
      target: {{type: noop}}
"""

#: (label, crossdock phase, dlt runs this load too)
LOADS: list[tuple[str, str, bool]] = [
    ("a first import", "import", True),
    ("  deliver all (noop)", "export", False),
    ("b unchanged re-import", "import", True),
    ("b2 unchanged again", "import", False),
    ("c 1% changed", "import", True),
]


# --------------------------------------------------------------------------------------------- children


def crossdock_child(workdir: Path, part: str) -> dict[str, Any]:
    """One crossdock phase, in a fresh process of the project's venv."""
    import asyncio

    from crossdock.engine.exporter import Exporter
    from crossdock.engine.importer import Importer
    from crossdock.engine.project import load_project
    from crossdock.store import open_store

    project = load_project(workdir / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    store.ensure_routes(project.routes)
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if part == "import":
        summary = asyncio.run(Importer(project, store).run_route("products"))
        r = summary.routes["products"]
        n = summary.read
        extra = {"new": r.by_status.get("new", 0), "unchanged": r.unchanged, "changed": r.changed}
    else:
        exp = asyncio.run(Exporter(project, store).run_route("products", limit=None))
        n = exp.claimed
        extra = {"by_status": dict(exp.by_status)}
    took = time.perf_counter() - start
    by_status = store.stats("products").by_status
    store.close()
    return {"n": n, "seconds": took, "rows": sum(by_status.values()), "tasks": by_status, **extra}


def dlt_child(workdir: Path, data: Path) -> dict[str, Any]:
    """One dlt merge load of the whole file into duckdb, in a fresh process of the peers venv."""
    import dlt
    import orjson  # a dlt dependency

    @dlt.resource(name="products", write_disposition="merge", primary_key="sku")
    def products() -> Any:
        with data.open("rb") as f:
            for line in f:
                yield orjson.loads(line)

    pipeline = dlt.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str(workdir / "peer.duckdb")),
        dataset_name="crossdock_bench",
    )
    start = time.perf_counter()
    pipeline.run(products())
    took = time.perf_counter() - start
    with pipeline.sql_client() as client:
        rows = client.execute_sql("SELECT count(*) FROM products")[0][0]
    n = sum(1 for _ in data.open("rb"))
    return {"n": n, "seconds": took, "rows": rows}


# --------------------------------------------------------------------------------------------- parent


@dataclass
class Measure:
    n: int
    seconds: float
    rss_mb: float
    load: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def run_child(python: str, args: list[str], log: Path) -> Measure:
    """Run this file as a child; its result comes back as JSON in a file, its peak RSS from wait4."""
    out = log.with_suffix(".json")
    out.unlink(missing_ok=True)
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as sink:
        proc = subprocess.Popen([python, __file__, *args, "--out", str(out)], stdout=sink, stderr=sink, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    info = json.loads(out.read_text())
    return Measure(info["n"], info["seconds"], usage.ru_maxrss / 1024, os.getloadavg()[0], info)


def better(old: Measure | None, new: Measure) -> Measure:
    return new if old is None or new.rate > old.rate else old


def fmt(m: Measure | None) -> str:
    if m is None:
        return f"{'—':>10} {'—':>7} {'':>5}"
    return f"{m.rate:>10,.0f} {m.rss_mb:>5.0f}MB {m.load:>5.2f}"


def main() -> int:
    from crossdock.engine.tuning import tune_interpreter

    tune_interpreter()  # as `crossdock run` does: the engine's figures are measured with the process tuned
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="crossdock's large size")
    parser.add_argument("--dlt-records", type=int, default=100_000, help="dlt's size (also crossdock's small size)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--crossdock-python", default=CROSSDOCK_PYTHON)
    parser.add_argument("--peers-python", default=PEERS_PYTHON)
    parser.add_argument("--child", choices=["crossdock", "dlt"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "crossdock":
            result = crossdock_child(Path(args.dir), args.part)
        else:
            result = dlt_child(Path(args.dir), Path(args.data))
        Path(args.out).write_text(json.dumps(result))
        return 0

    sys.path.insert(0, str(HERE.parent))
    from common import write_ndjson

    big, small = args.records, args.dlt_records
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load at start {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="crossdock-peers-dlt-") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[tuple[int, str], Path] = {}
        for n in sorted({big, small}):
            for kind, kw in (("orig", {}), ("changed", {"changed_every": 100, "reorder_every": 10})):
                files[n, kind] = tmp / f"products-{n}-{kind}.ndjson"
                write_ndjson(files[n, kind], n, **kw)
        print(f"data: {files[big, 'orig'].stat().st_size / big:.0f} bytes/record on average", flush=True)

        systems = [("crossdock", big), ("crossdock", small), ("dlt", small)]
        best: dict[tuple[str, int, str], Measure] = {}
        checks: list[str] = []
        for rep in range(args.repeat):
            dirs: dict[tuple[str, int], Path] = {}
            for system, n in systems:
                d = tmp / f"r{rep}-{system}-{n}"
                d.mkdir()
                dirs[system, n] = d
                if system == "crossdock":
                    (d / "crossdock.yaml").write_text(CONFIG.format(path=files[n, "orig"]))
            for label, part, dlt_too in LOADS:
                for system, n in systems:
                    d = dirs[system, n]
                    kind = "changed" if label.startswith("c ") else "orig"
                    log = d / f"{part}.log"
                    if system == "crossdock":
                        if kind == "changed":
                            (d / "crossdock.yaml").write_text(CONFIG.format(path=files[n, kind]))
                        m = run_child(
                            args.crossdock_python, ["--child", "crossdock", "--dir", str(d), "--part", part], log
                        )
                    elif dlt_too:
                        data = str(files[n, kind])
                        m = run_child(args.peers_python, ["--child", "dlt", "--dir", str(d), "--data", data], log)
                    else:
                        continue
                    key = (system, n, label)
                    best[key] = better(best.get(key), m)
                    shown = {k: v for k, v in m.info.items() if k not in ("n", "seconds")}
                    print(
                        f"run {rep + 1} {label:<22} {system:<9} {n:>9,}: {m.n:>9,} in {m.seconds:7.2f} s = "
                        f"{m.rate:>9,.0f}/s  peak RSS {m.rss_mb:6.0f} MB  load {m.load:.2f}  {shown}",
                        flush=True,
                    )
                    if system == "crossdock":
                        if label.startswith("c ") and m.info["new"] != n // 100:
                            checks.append(
                                f"FAIL run {rep + 1} {n:,}: (c) created {m.info['new']} tasks, not {n // 100}"
                            )
                        if label.startswith("b2") and m.info["rows"] != 2 * n:
                            checks.append(f"FAIL run {rep + 1} {n:,}: (b2) left {m.info['rows']} rows, not {2 * n}")
                    elif m.info["rows"] != n:
                        checks.append(f"FAIL run {rep + 1} dlt: {m.info['rows']} rows after {label}, not {n}")

        print()
        print(f"best of {args.repeat}; records/s, peak RSS of the child, 1-min load average after the run")
        head = f"{'crossdock ' + format(big, ','):>24} {'crossdock ' + format(small, ','):>24} "
        head += f"{'dlt ' + format(small, ','):>24}"
        print(f"{'load':<22} {head}  {'speed x':>8} {'speed x':>8} {'mem 1/x':>8}")
        print(f"{'':<22} {'':>24} {'':>24} {'':>24}  {'big/dlt':>8} {'same N':>8} {'same N':>8}")
        for label, _, _ in LOADS:
            cb, cs = best.get(("crossdock", big, label)), best.get(("crossdock", small, label))
            dl = best.get(("dlt", small, label))
            ratios = ["", "", ""]
            if dl and cb and cs:
                ratios = [f"{cb.rate / dl.rate:.1f}", f"{cs.rate / dl.rate:.1f}", f"{dl.rss_mb / cs.rss_mb:.1f}"]
            print(f"{label:<22} {fmt(cb)} {fmt(cs)} {fmt(dl)}  {ratios[0]:>8} {ratios[1]:>8} {ratios[2]:>8}")
        print()
        print("\n".join(checks) or "checks: (c) created exactly N/100 new tasks, (b2) added no rows, dlt kept N rows")
    return 1 if checks else 0


if __name__ == "__main__":
    sys.exit(main())
