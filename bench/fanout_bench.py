"""Fan-out: one shared incoming into three routes versus one route (target: less than twice the time).

Run: python bench/fanout_bench.py [--records 1000000]

Parsing and the incoming transform run once per record; each route then does its own identifier, fingerprint
and task writes. Each measurement runs in a fresh process with a fresh database.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import peak_rss_mb, write_ndjson


def config(routes: int) -> str:
    lines = [
        "database: sqlite:///bench.db",
        "incomings:",
        "  products:",
        "    source: {type: file, path: products.ndjson}",
        "    transform:  # a typical ERP mapping, done once for every route",
        "      - rename: {from: title, to: name}",
        '      - set: {path: url, template: "https://shop.example/p/{sku}"}',
        "      - map: {path: category, values: {apparel: A, books: B, garden: G}, default: O}",
        "      - convert: {path: price, to: cents}",
        "      - convert: {path: updated_at, to: date, tz: Europe/Berlin}",
        "      - string: {path: sku, op: upper}",
        "      - remove: [description]",
        "      - defaults: {currency: EUR}",
        '      - math: {path: stock_value, expr: "price * stock"}',
        "routes:",
    ]
    for i in range(routes):
        lines += [
            f"  route-{i}:",
            "    incoming: products",
            "    identifier: sku",
            "    outgoing: {target: {type: noop}}",
        ]
    return "\n".join(lines) + "\n"


def phase(workdir: str) -> None:
    import asyncio

    from crossdock.engine.importer import Importer
    from crossdock.engine.project import load_project
    from crossdock.store import open_store

    project = load_project(Path(workdir) / "crossdock.yaml")
    store = open_store(project.database_url(), base=project.root)
    start = time.perf_counter()
    summary = asyncio.run(Importer(project, store).run_incoming(project.incomings["products"]))
    took = time.perf_counter() - start
    news = {name: r.by_status.get("new", 0) for name, r in summary.routes.items()}
    store.close()
    print(f"{took:.3f} {summary.read} {peak_rss_mb():.0f} {news}")


def main() -> None:
    from crossdock.engine.tuning import tune_interpreter

    tune_interpreter()  # as `crossdock run` does: the engine's figures are measured with the process tuned
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.phase)
        return
    with tempfile.TemporaryDirectory() as data_dir:
        data = Path(data_dir, "products.ndjson")
        write_ndjson(data, args.records)
        results = {}
        for routes in (1, 3):
            with tempfile.TemporaryDirectory() as workdir:
                Path(workdir, "crossdock.yaml").write_text(config(routes))
                Path(workdir, "products.ndjson").symlink_to(data)
                out = subprocess.run(
                    [sys.executable, __file__, "--phase", workdir], check=True, capture_output=True, text=True
                ).stdout.split(maxsplit=3)
                took, read, rss, news = float(out[0]), int(out[1]), out[2], out[3].strip()
                results[routes] = took
                print(f"{routes} route(s): {read:,} records in {took:.2f} s ({read / took:,.0f}/s), peak RSS {rss} MB")
                print(f"    new tasks per route: {news}")
        print(f"three routes take {results[3] / results[1]:.2f}x the time of one (target: under 2x)")


if __name__ == "__main__":
    main()
