"""Transformer benchmark: a typical 10-step product mapping, records per second on one core.

Figures (Python 3.11.7, one core of the dev container; `python bench/transform_bench.py`):

    FIGURES_PLACEHOLDER

Run: PYTHONPATH=src python bench/transform_bench.py [--records N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import yaml

from crossdock.errors import RecordFiltered
from crossdock.transform import compile_steps

STEPS_YAML = """
- rename: {from: title, to: name}
- set: {path: url, template: "https://shop.example/p/{sku}"}
- map: {path: category, values: {A: apparel, B: books, C: computers}, default: other}
- convert: {path: price, to: cents}
- convert: {path: updated_at, to: date, tz: Europe/Berlin}
- string: {path: sku, op: upper}
- filter: "stock > 0 and status == 'active'"
- remove: [internal_note, erp_flags]
- defaults: {currency: EUR}
- math: {path: stock_value, expr: "price * stock"}
"""


def make_records(n: int) -> list[dict[str, Any]]:
    """Realistic ERP product rows; every 20th is out of stock (filtered)."""
    return [
        {
            "sku": f"ab-{i:06d}",
            "title": f"Product {i} – Größe M",
            "category": "ABCD"[i % 4],
            "price": f"{i % 500}.{i % 100:02d}",
            "updated_at": "2024-03-01T23:30:00+00:00",
            "stock": 0 if i % 20 == 0 else i % 37 + 1,
            "status": "active",
            "internal_note": "do not publish",
            "erp_flags": ["x", "y"],
            "attributes": {"color": "red", "size": "M"},
        }
        for i in range(n)
    ]


def run_pipeline(steps: list[Any], records: list[dict[str, Any]]) -> tuple[float, int]:
    """Seconds per record for the whole list, and how many were kept."""
    pipeline = compile_steps(steps)
    apply = pipeline.apply
    kept = 0
    start = time.perf_counter()
    for record in records:
        try:
            kept += len(apply(record))
        except RecordFiltered:
            continue
    return (time.perf_counter() - start) / len(records), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    steps = yaml.safe_load(STEPS_YAML)
    records = make_records(args.records)

    run_pipeline(steps, records[:5000])  # warm up
    best = min(run_pipeline(steps, records)[0] for _ in range(3))
    _, kept = run_pipeline(steps, records)
    print(f"10-step product mapping: {best * 1e6:.2f} µs/record = {1 / best:,.0f} records/s ({kept} kept)")

    empty = min(run_pipeline([], records)[0] for _ in range(3))
    print(f"  empty pipeline: {empty * 1e6:.2f} µs/record")
    # cost of each step: the prefix pipeline with the step minus the prefix without it
    print("  per step (µs/record, cumulative difference):")
    previous = empty
    sample = records[: min(len(records), 100_000)]
    for i in range(1, len(steps) + 1):
        cost = min(run_pipeline(steps[:i], sample)[0] for _ in range(3))
        kind = next(iter(steps[i - 1]))
        print(f"    {i:2d} {kind:<10} {(cost - previous) * 1e6:6.2f}")
        previous = cost
    one = min(run_pipeline(steps[:1], sample)[0] for _ in range(3))
    print(f"  1-step pipeline (rename): {one * 1e6:.2f} µs/record")


if __name__ == "__main__":
    main()
