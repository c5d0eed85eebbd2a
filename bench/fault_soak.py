"""Fault soak: deliver while faults keep coming, for minutes, then count what was lost and what arrived twice.

The long version of ``tests/faults/``. Tasks are imported into a fresh project, N ``crossdock worker``
processes deliver them to the mock shop (in its own process, recording ``Idempotency-Key`` counts), and until
``--minutes`` have passed a fault is injected every few seconds, chosen at random:

- ``kill``: SIGKILL of a random worker, and a new one started in its place;
- ``term``: SIGTERM of a random worker (graceful stop), and a new one started;
- ``outage`` (``--backend postgresql`` only): the private PostgreSQL server stopped for 1-20 s (fast or
  immediate), then started again;
- ``target``: the shop answers 503 to every third request, or drops connections, for a few seconds.

New tasks keep arriving (an import every 10 s). At the end the shop is healed, the workers drain the backlog,
and the report says: tasks imported, finished, lost (imported but never accepted by the shop), in processing,
keys delivered twice and the most any key was delivered, processes that exited on their own, and whether
``stats --verify`` agrees. A correct run has 0 lost, 0 processing, 0 unexpected exits, verify ok, and
duplicates no more than (workers x concurrency) per SIGKILL.

Run (the PostgreSQL variant starts its own server, as root it runs it as the ``postgres`` user)::

    PYTHONPATH=src:tests:tests/faults .venv/bin/python bench/fault_soak.py --minutes 5 --backend sqlite
    PYTHONPATH=src:tests:tests/faults .venv/bin/python bench/fault_soak.py --minutes 5 --backend postgresql

Figures are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

from faultkit import PrivatePostgres, free_port  # noqa: E402

CLI = [sys.executable, "-m", "crossdock.cli"]
CONFIG = """\
connections:
  shop: {{type: http, base_url: "{shop}", timeout: 2s}}
routes:
  to-shop:
    incoming:
      source: {{type: file, path: products.ndjson}}
      batch_size: 5000
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, method: PUT, path: "/products/{{sku}}"}}
      concurrency: {concurrency}
      lease: 5s
    retry: {{max_attempts: 1000, backoff: 200ms, max_backoff: 2s}}
"""


def env(db: str) -> dict[str, str]:
    path = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": path, "CROSSDOCK_DB": db}


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def write_products(path: Path, start: int, n: int) -> None:
    with path.open("w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"sku": f"SKU-{i:07d}", "name": f"product {i}", "price": i}) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2000, help="records per import (one every 10 s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"backend": args.backend, "minutes": args.minutes, "faults": {}}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crossdock-soak-")))
        server: PrivatePostgres | None = None
        if args.backend == "postgresql":
            server = PrivatePostgres()
            stack.callback(server.close)
            server.start()
            db = server.url
        else:
            db = f"sqlite:///{root / 'crossdock.db'}"
        port = free_port()
        shop_url = f"http://127.0.0.1:{port}"
        shop = subprocess.Popen(
            [sys.executable, "-m", "crossdock.mock", "shop", "--port", str(port), "--no-record-bodies"],
            env=env(db),
            stdout=subprocess.DEVNULL,
        )
        stack.callback(lambda: (shop.terminate(), shop.wait(timeout=10)))
        deadline = time.monotonic() + 20
        while True:
            try:
                http("GET", shop_url + "/_stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        (root / "crossdock.yaml").write_text(CONFIG.format(shop=shop_url, concurrency=args.concurrency))
        imported = 0

        def import_more() -> None:
            nonlocal imported
            write_products(root / "products.ndjson", imported, args.batch)
            done = subprocess.run(
                [*CLI, "run", "to-shop", "--incoming"], cwd=root, env=env(db), capture_output=True, timeout=300
            )
            if done.returncode == 0:
                imported += args.batch  # a failed import (an outage longer than CROSSDOCK_DB_WAIT) is tried again

        log = (root / "workers.log").open("ab")

        def start_worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen([*CLI, "worker"], cwd=root, env=env(db), stdout=log, stderr=log)

        import_more()
        workers = [start_worker() for _ in range(args.workers)]
        exited: list[int] = []
        faults: dict[str, int] = report["faults"]
        end = time.monotonic() + args.minutes * 60
        next_import = time.monotonic() + 10
        while time.monotonic() < end:
            time.sleep(rng.uniform(2, 6))
            for w in workers:
                if w.poll() is not None and w.returncode not in (-signal.SIGKILL, 0):
                    exited.append(w.returncode)
            kinds = ["kill", "term", "target"] + (["outage"] if server is not None else [])
            kind = rng.choice(kinds)
            faults[kind] = faults.get(kind, 0) + 1
            if kind in ("kill", "term"):
                i = rng.randrange(len(workers))
                workers[i].send_signal(signal.SIGKILL if kind == "kill" else signal.SIGTERM)
                code = workers[i].wait(timeout=120)
                if kind == "term" and code not in (0, 143):  # 143: stopped before it had started work
                    exited.append(code)
                workers[i] = start_worker()
            elif kind == "outage" and server is not None:
                server.stop(rng.choice(["fast", "immediate"]))
                time.sleep(rng.uniform(1, 20))
                server.start()
            else:
                modes = rng.choice([{"fail_every": 3, "fail_status": 503}, {"drop_connection": True}])
                http("POST", shop_url + "/_failures", modes)
                time.sleep(rng.uniform(1, 5))
                http("DELETE", shop_url + "/_failures")
            if time.monotonic() >= next_import:
                import_more()
                next_import = time.monotonic() + 10
        http("DELETE", shop_url + "/_failures")
        drain_until = time.monotonic() + 600
        stats: dict[str, int] = {}
        while time.monotonic() < drain_until:
            done = subprocess.run(
                [*CLI, "stats", "--json"], cwd=root, env=env(db), capture_output=True, text=True, timeout=60
            )
            if done.returncode == 0:
                stats = json.loads(done.stdout)["by_status"]
                if stats["finished"] >= imported and stats["processing"] == 0:
                    break
            time.sleep(1)
        for w in workers:
            w.send_signal(signal.SIGTERM)
            if w.wait(timeout=120) != 0:
                exited.append(w.returncode)
        verify = subprocess.run(
            [*CLI, "stats", "--verify", "--json"], cwd=root, env=env(db), capture_output=True, text=True, timeout=120
        )
        shop_stats = http("GET", shop_url + "/_stats")
        duplicates: dict[str, int] = shop_stats["duplicates"]
        report.update(
            {
                "imported": imported,
                "finished": stats.get("finished"),
                "processing": stats.get("processing"),
                "lost": imported - shop_stats["idempotency_keys"],
                "keys_delivered_twice_or_more": len(duplicates),
                "extra_deliveries": sum(n - 1 for n in duplicates.values()),
                "most_deliveries_of_one_key": max(duplicates.values(), default=1),
                "unexpected_exits": exited,
                "verify_ok": verify.returncode == 0,
            }
        )
    print(json.dumps(report, indent=2))
    ok = report["lost"] == 0 and report["processing"] == 0 and not exited and report["verify_ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
