"""The Celery side of ``celery_delivery_bench.py``: one task that POSTs one entity to the mock shop.

Runs in the peers venv (``/tmp/peers-venv``), never in the project's. Configured by environment:
``PEERS_BROKER`` (default ``redis://127.0.0.1:6379/13``), ``PEERS_QUEUE`` and ``PEERS_SHOP`` (the shop's base URL).

- worker: ``celery -A celery_tasks worker -Q $PEERS_QUEUE --pool prefork --concurrency 2`` (cwd ``bench/peers``)
- ``python celery_tasks.py enqueue FILE``: one task per NDJSON line, then prints the count
- ``python celery_tasks.py keys`` / ``python celery_tasks.py delete KEY...``: list / drop broker keys (clean-up)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import requests
from celery import Celery

BROKER = os.environ.get("PEERS_BROKER", "redis://127.0.0.1:6379/13")
QUEUE = os.environ.get("PEERS_QUEUE", "crossdock-peers-bench")
SHOP = os.environ.get("PEERS_SHOP", "http://127.0.0.1:8082")

app = Celery("crossdock_peers", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per process or thread (``requests.Session`` is not thread-safe)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@app.task(name="deliver", autoretry_for=(requests.ConnectionError,), max_retries=3)
def deliver(entity: dict[str, Any]) -> None:
    sku = entity["sku"]
    response = _session().post(
        f"{SHOP}/products/{sku}",
        data=json.dumps(entity),
        headers={"Content-Type": "application/json", "Idempotency-Key": f"celery-{sku}"},
        timeout=30,
    )
    response.raise_for_status()


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(BROKER)


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "enqueue":
        n = 0
        with open(argv[1], "rb") as f, app.producer_or_acquire() as producer:
            for line in f:
                deliver.apply_async((json.loads(line),), producer=producer)
                n += 1
        print(n)
    elif command == "keys":
        print(json.dumps(sorted(k.decode() for k in _redis().keys("*"))))
    elif command == "delete":
        if argv[1:]:
            _redis().delete(*argv[1:])
    else:
        raise SystemExit(f"unknown command {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
