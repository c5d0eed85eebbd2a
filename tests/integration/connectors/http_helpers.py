"""Helpers for the HTTP connector tests: ERP credentials per auth mode, and a project in a tmp folder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from crossdock.engine.exporter import Exporter, ExportSummary
from crossdock.engine.importer import Importer, ImportSummary
from crossdock.engine.project import Project, load_project
from crossdock.store import Store, TaskFilter, open_store
from crossdock.tasks import Task

#: connection ``auth:`` blocks matching the mock ERP's demo credentials, per ERP auth mode
AUTH_BLOCKS = {
    "none": "{type: none}",
    "bearer": "{type: bearer, token: erp-token}",
    "basic": "{type: basic, username: erp, password: erp-secret}",
    "api_key_header": "{type: api_key, name: X-Api-Key, value: erp-key}",
    "api_key_query": "{type: api_key, name: api_key, value: erp-key, location: query}",
    "oauth2": "{type: oauth2, token_url: '%(erp)s/oauth/token', client_id: crossdock, client_secret: crossdock-secret}",
}


class Harness:
    """A project in a tmp folder with a SQLite store; runs imports and exports with shared connection clients."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store: Store | None = None
        self.project: Project | None = None

    def write(self, yaml: str) -> Project:
        (self.root / "crossdock.yaml").write_text(yaml)
        self.project = load_project(self.root / "crossdock.yaml", environ={})
        if self.store is None:
            self.store = open_store(f"sqlite:///{self.root / 'crossdock.db'}")
        self.store.ensure_routes(self.project.routes)
        return self.project

    def run_import(self, route: str, *, progress: Callable[[int], None] | None = None) -> ImportSummary:
        """One import run in its own event loop (connection clients are bound to a loop, so closed after)."""
        assert self.project is not None and self.store is not None
        importer = Importer(self.project, self.store)

        async def go() -> ImportSummary:
            try:
                return await importer.run_route(route, progress=progress)
            finally:
                await importer.close()

        return asyncio.run(go())

    def run_export(self, route: str) -> ExportSummary:
        assert self.project is not None and self.store is not None
        exporter = Exporter(self.project, self.store)

        async def go() -> ExportSummary:
            try:
                return await exporter.run_route(route)
            finally:
                await exporter.close()

        return asyncio.run(go())

    def tasks(self, route: str | None = None) -> list[Task]:
        assert self.store is not None
        found, _ = self.store.list_tasks(TaskFilter(route=route), limit=100_000)
        return found

    def by_status(self, route: str) -> dict[str, int]:
        assert self.store is not None
        return {k: v for k, v in self.store.stats(route).by_status.items() if v}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def write_products(path: Path, n: int) -> None:
    """n small product records as NDJSON, SKUs ``SKU-00001``..., for routes that deliver to the mock shop."""
    import orjson

    with open(path, "wb") as f:
        for i in range(1, n + 1):
            f.write(orjson.dumps({"sku": f"SKU-{i:05d}", "title": f"Product {i}", "stock": i % 50}) + b"\n")


def file_to_shop(shop_url: str, target: str, *, connection: str = "", retry: str = "", concurrency: int = 16) -> str:
    """A route from ``products.ndjson`` to the shop; ``target`` holds the target block's extra keys."""
    return f"""\
connections:
  shop: {{type: http, base_url: "{shop_url}"{connection}}}
routes:
  products:
    incoming: {{source: {{type: file, path: products.ndjson}}}}
    identifier: sku
    outgoing:
      target: {{type: http, connection: shop, {target}}}
      concurrency: {concurrency}
{retry}"""
