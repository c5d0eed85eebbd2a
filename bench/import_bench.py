"""Import and export throughput on SQLite (issue: the spine, and delta detection).

Run: python bench/import_bench.py [--records 1000000]

Each phase runs in a fresh process so peak RSS is per phase.

Phase 2 (export, no-op target), 1,000,000 tasks, 2026-11-25, load 1.1-2.3, run back to back on the same
imported database: 33,220 tasks/s and 28.5 s of CPU; the code before the export work 22,478 tasks/s and 44.4 s
of CPU (goal >= 50,000 tasks/s, not met: see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import peak_rss_mb, write_ndjson

CONFIG = """\
database: sqlite:///bench.db
routes:
  products:
    incoming:
      source: {type: file, path: products.ndjson}
      batch_size: 5000
    identifier: sku
    outgoing:
      target: {type: noop}
"""


def phase(workdir: str, part: str, limit: int | None = None) -> None:
    from crossdock.engine.exporter import Exporter
    from crossdock.engine.importer import Importer
    from crossdock.engine.project import load_project
    from crossdock.store import open_store

    project = load_project(Path(workdir) / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    store.ensure_routes(project.routes)
    start = time.perf_counter()
    if part == "import":
        summary = asyncio.run(Importer(project, store).run_route("products"))
        r = summary.routes["products"]
        n = summary.read
        extra = f"new={r.by_status.get('new', 0)} unchanged={r.unchanged} changed={r.changed}"
    else:
        exp = asyncio.run(Exporter(project, store).run_route("products", limit=limit))
        n = exp.claimed
        extra = str(exp.by_status)
    took = time.perf_counter() - start
    stats = store.stats("products").by_status
    store.close()
    print(
        f"{part:<7} {n:>9,} records in {took:6.2f} s = {n / took:>9,.0f}/s  peak RSS {peak_rss_mb():5.0f} MB  {extra}"
    )
    print(f"        tasks: {stats}")


def main() -> None:
    from crossdock.engine.tuning import tune_interpreter

    tune_interpreter()  # as `crossdock run` does: the engine's figures are measured with the process tuned
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.dir, args.phase)
        return
    n = args.records
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "crossdock.yaml").write_text(CONFIG)
        data = Path(workdir, "products.ndjson")
        write_ndjson(data, n)
        print(f"{n:,} records, {data.stat().st_size / n:.0f} bytes each on average")

        def run(part: str) -> None:
            subprocess.run([sys.executable, __file__, "--phase", part, "--dir", workdir], check=True)

        print("1. first import")
        run("import")
        print("2. deliver everything (no-op target): claim + settle")
        run("export")
        print("3. unchanged re-import: one skipped (unchanged) task per record")
        run("import")
        print("4. unchanged re-import again: no new rows")
        run("import")
        print("5. 1% changed, 10% reordered keys")
        write_ndjson(data, n, changed_every=100, reorder_every=10)
        run("import")


if __name__ == "__main__":
    main()
