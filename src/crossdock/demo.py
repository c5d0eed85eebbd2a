"""`crossdock demo`: a mock ERP and a mock shop + PIM on loopback, the fan-out example project, a summary."""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from rich.console import Console

from crossdock.engine.project import Project, load_project
from crossdock.engine.runner import run_once
from crossdock.mock import FailureConfig, RunningErp, start_erp, start_shop
from crossdock.store import Store, open_store

ROUTES = ("erp-to-shop", "erp-to-pim")
#: how long ``--once`` keeps trying the tasks a 503 sent to retry (their backoff grows: 2 s, 4 s, 8 s)
SETTLE_WITHIN = 60.0


def demo_config() -> str:
    """The example project of examples/erp-shop-pim, shipped inside the package."""
    return resources.files("crossdock.demo_project").joinpath("crossdock.yaml").read_text(encoding="utf-8")


def run_demo(
    directory: Path,
    *,
    port: int,
    products: int,
    console: Console,
    config_name: str = "crossdock.yaml",
    database: str | None = None,
    serve: bool = True,
    host: str = "127.0.0.1",
    keep: bool = False,
) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / config_name
    text = demo_config()
    if database is not None:
        text = text.replace("sqlite:///crossdock.db", database, 1)
    config.write_text(text, encoding="utf-8")
    if database is None:
        _fresh_database(directory / "crossdock.db", keep=keep, console=console)
    token = "demo-erp-token"
    # a flaky shop (every 20th request 503, so some tasks retry) and two products it refuses for good
    failures = FailureConfig(fail_every=20, fail_status=503, status_for_skus={"SKU-00003": 400, "SKU-00042": 422})
    with (
        start_erp(products=products, auth={"mode": "bearer", "token": token}) as erp,
        start_shop(failures=failures) as shop,
    ):
        os.environ.update({"ERP_URL": erp.url, "ERP_TOKEN": token, "SHOP_URL": shop.url})
        console.print(f"mock ERP       {erp.url}  ({products} products, bearer auth)")
        console.print(f"mock shop+PIM  {shop.url}  (every 20th request 503, SKU-00003 and SKU-00042 refused)")
        # one product with a negative stock: the incoming's reject step turns it into a rejected task
        erp.catalogue.update("SKU-00007", stock=-3, status="active")
        project = load_project(config)
        store = open_store(project.database_url(), base=project.root)
        try:
            store.ensure_routes(project.routes)
            _run(project, store, console)
            stats = {r: store.stats(r).by_status for r in ROUTES}
            shop_stats = shop.stats()
            console.print(
                f"\nERP product API asked {erp.requests_to('/products')} time(s) for both routes; "
                f"shop and PIM received {shop_stats['requests']} requests"
            )
            for route, counts in stats.items():
                shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                console.print(f"  {route}: {shown}")
            if serve:
                return _serve_live(project, store, erp, console, host=host, port=port)
        finally:
            store.close()
    db = (directory / "crossdock.db").resolve()
    me = command_name()
    console.print(
        f"\nThe project and its database stay in {directory.resolve()}. Explore them:\n"
        f"  cd {shlex.quote(str(directory.resolve()))}\n"
        f"  {me} tasks list --status failed\n"
        f"  {me} tasks show <id>          # entity, error and timeline\n"
        f"  {me} tasks finish --status waiting --route erp-to-pim --reason 'approved'\n"
        f"  {me} runs list && {me} stats\n"
        f"(database: {db}; `crossdock demo` without --once also serves the dashboard; --keep continues this "
        "database next time instead of starting afresh.)",
        markup=False,
    )
    return 0


def command_name() -> str:
    """How to type ``crossdock`` so the hints work as printed: the bare name when it is on PATH and is this
    installation, else the full path of this installation's script (``scripts/demo`` does not put it on PATH)."""
    found = shutil.which("crossdock")
    script = Path(sys.argv[0]) if sys.argv and Path(sys.argv[0]).name == "crossdock" else None
    if found and (script is None or Path(found).resolve() == script.resolve()):
        return "crossdock"
    if script is not None and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m crossdock.cli"


def _fresh_database(path: Path, *, keep: bool, console: Console) -> None:
    """Each demo starts from an empty database, so two runs' counts never mix; ``--keep`` continues the last."""
    files = [p for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]
    if not files:
        return
    if keep:
        console.print(f"continuing with the database of the last demo ({path}; without --keep it starts afresh)")
        return
    for file in files:
        file.unlink()
    console.print(f"starting with a fresh database ({path}; --keep continues the last demo's instead)")


def _serve_live(project: Project, store: Store, erp: RunningErp, console: Console, *, host: str, port: int) -> int:
    """Scheduler, workers and dashboard, with the ERP changing a few prices every 20 s, until Ctrl-C."""
    from crossdock.service import ServiceOptions, run_serve

    changing = threading.Event()

    def change_prices() -> None:
        rng = random.Random(7)
        skus = erp.catalogue.skus()
        while not changing.wait(20):
            for sku in rng.sample(skus, k=min(5, len(skus))):
                erp.catalogue.update(sku, price=f"{rng.randint(100, 9999) / 100:.2f}")

    feeder = threading.Thread(target=change_prices, name="demo-erp-changes", daemon=True)
    feeder.start()
    console.print(
        f"\nServing the dashboard on http://{host}:{port}/ with the scheduler and workers; the mock ERP changes a "
        "few prices every 20 s, so new tasks keep arriving. Ctrl-C stops."
    )
    try:
        return int(asyncio.run(run_serve(project, store, project.database_url(), ServiceOptions(host=host, port=port))))
    finally:
        changing.set()


def _run(project: Project, store: Store, console: Console) -> None:
    first = asyncio.run(run_once(project, store, "erp-products", outgoing=False, actor="demo"))
    console.print(f"\nfetched {first['incoming']['read']} products once:")
    for name, r in first["incoming"]["routes"].items():
        console.print(
            f"  {name}: new {r['new']}, filtered {r['filtered']}, rejected {r['rejected']}, unchanged {r['unchanged']}"
        )
    deadline = time.monotonic() + SETTLE_WITHIN
    while True:
        pending = 0
        for route in ROUTES:
            result = asyncio.run(run_once(project, store, route, incoming=False, actor="demo"))
            pending += result["by_status"]["retry"]
        if not pending:
            return
        due = [at for r in ROUTES for at in [store.oldest_due().get(r, {}).get("retry")] if at is not None]
        wait = max(0.2, (min(due) - datetime.now(UTC)).total_seconds()) if due else 1.0
        if time.monotonic() + wait > deadline:
            console.print(
                f"  {pending} task(s) still in retry after {SETTLE_WITHIN:g} s; `crossdock tasks list --status retry` "
                "shows them, and `crossdock run ROUTE --outgoing` (or serve) tries them when due"
            )
            return
        console.print(f"  {pending} task(s) in retry after a 503; trying again in {wait:.1f} s…")
        time.sleep(wait)
