"""How long one alert check takes with many failed tasks in the database: the leader of ``serve`` runs every rule
every ``alerts.check_every`` (5 s), so it must stay a few milliseconds however large the table grows.

    PYTHONPATH=src .venv/bin/python bench/alert_check_bench.py sqlite:///alerts-bench.db 200000
    PYTHONPATH=src .venv/bin/python bench/alert_check_bench.py postgresql://postgres@127.0.0.1:5432/SCRATCH 200000

Imports N records, fails them all two hours ago, then times 20 checks of five rules (task_failed, backlog,
run_error, route_paused, recovered) 5 s apart. PostgreSQL is vacuumed first, as autovacuum would have: right after
the churn, dead index entries of the claimed tasks make the backlog rule's scan 4x slower.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import orjson

from crossdock.alerts.messages import Links
from crossdock.alerts.rules import Rules
from crossdock.config.models import AlertsConfig
from crossdock.store import open_store
from crossdock.store.base import ImportItem, ImportOptions, Settlement
from crossdock.tasks import Action, Status

url = sys.argv[1]
n = int(sys.argv[2])
store = open_store(url, base=tempfile.mkdtemp())
t0 = datetime.now(UTC) - timedelta(hours=2)
for start in range(0, n, 5000):
    items = [
        ImportItem(Status.NEW, f"k{i}", orjson.dumps({"i": i}), hashlib.md5(str(i).encode()).digest())
        for i in range(start, min(n, start + 5000))
    ]
    store.import_batch("r", items, run_id=None, options=ImportOptions(), now=t0)
    tasks = store.claim_due_tasks("r", len(items), worker="w", lease_until=t0 + timedelta(hours=1), now=t0)
    store.settle([Settlement(t.id, Action.DELIVERY_FAILED, "w", error=f"HTTP 422 e{t.id % 7}") for t in tasks], now=t0)
config = AlertsConfig.model_validate(
    {
        "channels": {"h": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "rules": [
            {"event": "task_failed", "digest": "1m", "channels": ["h"]},
            {"event": "backlog", "older_than": "30m", "channels": ["h"]},
            {"event": "run_error", "channels": ["h"]},
            {"event": "route_paused", "channels": ["h"]},
            {"event": "recovered", "channels": ["h"]},
        ],
    }
)
rules = Rules(config, store, ["r"], Links(None), lambda s: s)
now = datetime.now(UTC)
found, states = rules.check(now)
store.add_alerts([], now=now, states=states)
if store.backend == "postgresql":
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE tasks")
times = []
for k in range(20):
    at = now + timedelta(seconds=5 * (k + 1))
    s = time.perf_counter()
    found, states = rules.check(at)
    store.add_alerts([], now=at, states=states)
    times.append(time.perf_counter() - s)
times.sort()
print(
    f"{store.backend}: {n} failed tasks, one check of 5 rules: "
    f"median {times[10] * 1000:.2f} ms, max {times[-1] * 1000:.2f} ms"
)
store.close()
