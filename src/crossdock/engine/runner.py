"""One pass of a route, as `crossdock run` and the API's "run now" do it: import, then export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import CompiledRoute, Project
from crossdock.errors import UsageError
from crossdock.store import Store
from crossdock.store.base import empty_counts


async def run_once(
    project: Project,
    store: Store,
    name: str,
    *,
    incoming: bool = True,
    outgoing: bool = True,
    full: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    actor: str = "cli",
) -> dict[str, Any]:
    """Run a route (or, with only ``incoming``, a shared incoming by name) and report per-status counts."""
    exporter = Exporter(project, store)

    async def realtime(route: CompiledRoute, ids: list[int]) -> None:
        await exporter.deliver_claimed(route, store.get_tasks(ids))

    importer = Importer(project, store, worker=exporter.worker, on_realtime=realtime, clients=exporter.clients)
    result: dict[str, Any] = {"route": name, "status": "ok", "database": store.backend}
    routes: list[str]
    try:
        if name in project.routes:
            routes = [name]
            if incoming:
                summary = await importer.run_route(name, full=full, actor=actor, progress=progress)
                result["incoming"] = summary.to_json()
                if summary.status != "ok":
                    result["status"] = summary.status
        elif name in project.incomings:
            if outgoing and not incoming:
                raise UsageError(f"{name!r} is a shared incoming; --outgoing needs a route name")
            shared = project.incomings[name]
            routes = [r.name for r in project.routes_of(shared)]
            summary = await importer.run_incoming(shared, full=full, actor=actor, progress=progress)
            result["incoming"] = summary.to_json()
            if summary.status != "ok":
                result["status"] = summary.status
            outgoing = False
        else:
            known = ", ".join(sorted([*project.routes, *project.incomings])) or "none"
            raise UsageError(f"no route or shared incoming named {name!r} in {project.path} (known: {known})")
        if outgoing:
            if name in project.active_routes(store):
                exp = await exporter.run_route(name, limit=limit, actor=actor)
                result["outgoing"] = exp.to_json()
                if exp.status != "ok":
                    result["status"] = exp.status
            else:
                result["outgoing"] = None
                result["note"] = f"route {name} is inactive: nothing exported"
    finally:
        await exporter.close()
    by_status = empty_counts()
    for r in routes:
        for status, n in store.stats(r).by_status.items():
            by_status[status] += n
    result["by_status"] = by_status
    return result
