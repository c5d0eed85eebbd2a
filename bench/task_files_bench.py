"""Search by payload, export and re-import at a million tasks on SQLite (#17 must-shows 3 and 4).

    PYTHONPATH=src .venv/bin/python bench/task_files_bench.py [--tasks 1000000]

Builds a project whose route has N failed tasks (each entity ``{sku, price, category, title}``, prices spread over
0..1999), then times the real CLI as a subprocess:

1. ``tasks list --where`` (the first page of 50) for common, rare and absent matches, decided by SQL or by
   Python, each checked against a full scan in Python;
2. ``tasks retry --where 'price > 1990'``: exactly the matching tasks change;
3. ``tasks export --status failed --format ndjson -o FILE``: wall time and the child's peak RSS;
4. ``tasks import FILE --route r`` of that export: the documented delta outcome (every entity unchanged, so no new
   task) and its time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import xxhash

from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement, TaskFilter
from crossdock.store.payload_filter import payload_filter
from crossdock.tasks import Action, Status

CONFIG = """\
database: sqlite:///bench.db
routes:
  r:
    incoming: {source: {type: file, path: in.ndjson}}
    identifier: sku
    outgoing: {target: {type: noop}}
"""


def entity(i: int) -> dict[str, object]:
    return {
        "sku": f"S{i:07d}",
        "price": (i * 7919) % 2000,
        "category": ("toys", "home", "garden")[i % 3],
        "title": f"{'Lamp' if i % 10 == 0 else 'Chair'} model {i}",
    }


def build(root: Path, n: int) -> None:
    store = open_store("sqlite:///bench.db", base=root)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    for start in range(0, n, 20_000):
        items = []
        for i in range(start, min(n, start + 20_000)):
            body = orjson.dumps(entity(i), option=orjson.OPT_SORT_KEYS)
            # the importer's own fingerprint, so a re-import of the same entity is "unchanged"
            items.append(ImportItem(Status.NEW, f"S{i:07d}", body, xxhash.xxh3_128_digest(body)))
        store.import_batch("r", items, run_id=None, options=ImportOptions(), now=t0)
        claimed = store.claim_due_tasks("r", len(items), worker="b", lease_until=t0 + timedelta(hours=1), now=t0)
        store.settle([Settlement(t.id, Action.DELIVERY_FAILED, "b", error="HTTP 422") for t in claimed], now=t0)
    store.close()


def cli(root: Path, *args: str) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS of the CLI process (KiB, by GNU time: a forked child's own rusage would count the
    pages of this big process it was forked from) and stdout of one CLI call."""
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss=%M", sys.executable, "-m", "crossdock.cli", *args],
        cwd=root,
        capture_output=True,
        check=True,
    )
    took = time.perf_counter() - started
    peak = int(proc.stderr.decode().rsplit("maxrss=", 1)[1].split()[0])
    return took, peak, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.tasks
    with tempfile.TemporaryDirectory(prefix="crossdock-taskfiles-") as tmp:
        root = Path(tmp)
        (root / "crossdock.yaml").write_text(CONFIG)
        (root / "in.ndjson").write_text("")
        started = time.perf_counter()
        build(root, n)
        print(f"built {n:,} failed tasks in {time.perf_counter() - started:.1f} s; load {os.getloadavg()[0]:.2f}")

        # common matches; a rare one (a page needs a tenth of the table); none at all (the whole table is read)
        for expr in (
            "price > 1000",
            "price > 1000 and contains(lower(title), 'lamp')",
            "price == 1999 and category == 'garden'",
            "price > 5000",
            "contains(title, 'no such thing')",
        ):
            took, _rss, out = cli(root, "tasks", "list", "--where", expr, "--json", "--limit", "50")
            page = orjson.loads(out)["items"]
            wanted = payload_filter(expr)
            scan = [i for i in range(n - 1, -1, -1) if wanted.matches(entity(i))][:50]
            assert [t["identifier"] for t in page] == [f"S{i:07d}" for i in scan], expr
            print(f"tasks list --where {expr!r}: {took:.2f} s (first page of 50, equal to a full scan in Python)")

        expr = "price > 1990"
        took, _rss, out = cli(root, "tasks", "retry", "--where", expr, "--json")
        changed = orjson.loads(out)["changed"]
        wanted_n = sum(1 for i in range(n) if entity(i)["price"] > 1990)  # type: ignore[operator]
        assert changed == wanted_n, (changed, wanted_n)
        print(f"tasks retry --where {expr!r}: {took:.2f} s, changed {changed:,} = a full scan's count")

        took, rss, _out = cli(root, "tasks", "export", "--status", "failed", "-f", "ndjson", "-o", "failed.ndjson")
        with open(root / "failed.ndjson", "rb") as handle:
            lines = sum(1 for _ in handle)
        print(f"tasks export --status failed: {lines:,} lines in {took:.1f} s, peak RSS {rss / 1024:.0f} MB")

        took, rss, out = cli(root, "tasks", "import", "failed.ndjson", "--route", "r", "--json")
        summary = orjson.loads(out)["routes"]["r"]
        store = open_store("sqlite:///bench.db", base=root)
        total = store.count_tasks(TaskFilter(route="r"))
        store.close()
        print(
            f"tasks import of it: {took:.1f} s, peak RSS {rss / 1024:.0f} MB; new {summary['new']:,} unchanged "
            f"{summary['unchanged']:,} (failed latest tasks are touched, not resent: tasks now {total:,})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
