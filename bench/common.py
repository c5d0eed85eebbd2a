"""Shared helpers for the benchmarks: data generation, timing, peak memory."""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson


def product(i: int, rng: random.Random, *, version: int = 0) -> dict[str, object]:
    """About 300 bytes of JSON, like a small ERP product record."""
    return {
        "sku": f"SKU-{i:08d}",
        "title": f"Product {i} {'abcdefghij'[i % 10] * 12}",
        "description": "A well made thing for everyday use, in a sturdy box." + (" v2" if version else ""),
        "price": f"{rng.randint(100, 99999) / 100:.2f}",
        "currency": "EUR",
        "stock": rng.randint(0, 500),
        "category": rng.choice(["apparel", "books", "garden", "kitchen", "toys"]),
        "ean": f"{rng.randint(10**12, 10**13 - 1)}",
        "updated_at": "2026-11-01T10:00:00Z",
    }


def write_ndjson(path: Path, n: int, *, seed: int = 1, changed_every: int = 0, reorder_every: int = 0) -> None:
    """n records; every ``changed_every``-th changed, every ``reorder_every``-th with its keys reversed."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(n):
            rec = product(i, rng)
            if changed_every and i % changed_every == 0:
                rec["description"] = str(rec["description"]) + " (changed)"
            if reorder_every and i % reorder_every == 1:
                rec = dict(reversed(list(rec.items())))
            f.write(orjson.dumps(rec) + b"\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed() -> Iterator[list[float]]:
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
