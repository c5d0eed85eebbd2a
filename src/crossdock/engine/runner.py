"""One pass of a route, as `crossdock run` and the API's "run now" do it: import, then export.

A pass can be asked to stop (``crossdock run`` does on SIGTERM or Ctrl-C): the import stops reading after the
page in hand, stores what it read and is recorded ``failed`` (so the source's position is not advanced and the
next run reads the rest); the export stops claiming, lets the deliveries on the wire finish and be recorded, and
hands unstarted tasks back to ``new`` or ``retry``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from crossdock.engine.exporter import Exporter
from crossdock.engine.importer import Importer
from crossdock.engine.project import CompiledRoute, Project, effective_active
from crossdock.engine.run_liveness import abandon_dead_runs
from crossdock.errors import StoreUnavailable, UsageError
from crossdock.store import Store
from crossdock.store.base import empty_counts


class RoutePass:
    """One import and/or export pass of a route (or an import of a shared incoming); :meth:`stop` ends it early."""

    def __init__(
        self,
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
    ) -> None:
        self.project, self.store, self.name = project, store, name
        self.incoming, self.outgoing, self.full, self.limit = incoming, outgoing, full, limit
        self.progress, self.actor = progress, actor
        self.exporter = Exporter(project, store)

        async def realtime(route: CompiledRoute, ids: list[int]) -> None:
            await self.exporter.deliver_claimed(route, store.get_tasks(ids))

        self.importer = Importer(
            project, store, worker=self.exporter.worker, on_realtime=realtime, clients=self.exporter.clients
        )
        #: why the pass was asked to stop (e.g. "SIGTERM"), or None
        self.stopped_by: str | None = None

    def stop(self, why: str = "a stop request") -> None:
        """Stop reading and claiming; what is on the wire finishes and is recorded."""
        if self.stopped_by is None:
            self.stopped_by = why
        self.importer.stop(why)
        self.exporter.stop()

    async def run(self) -> dict[str, Any]:
        """Run the pass and report per-status counts of its routes."""
        project, store, name = self.project, self.store, self.name
        # runs of processes that died are marked before this one adds its own; in an outage, the import or export
        # below waits for the database, or fails with the reason
        with contextlib.suppress(StoreUnavailable):
            abandon_dead_runs(store)
        result: dict[str, Any] = {"route": name, "status": "ok", "database": store.backend}
        routes: list[str]
        outgoing = self.outgoing
        try:
            if name in project.routes:
                routes = [name]
                if self.incoming:
                    summary = await self.importer.run_route(
                        name, full=self.full, actor=self.actor, progress=self.progress
                    )
                    result["incoming"] = summary.to_json()
                    if summary.status != "ok":
                        result["status"] = summary.status
            elif name in project.incomings:
                if outgoing and not self.incoming:
                    raise UsageError(f"{name!r} is a shared incoming; --outgoing needs a route name")
                shared = project.incomings[name]
                routes = [r.name for r in project.routes_of(shared)]
                summary = await self.importer.run_incoming(
                    shared, full=self.full, actor=self.actor, progress=self.progress
                )
                result["incoming"] = summary.to_json()
                if summary.status != "ok":
                    result["status"] = summary.status
                outgoing = False
            else:
                known = ", ".join(sorted([*project.routes, *project.incomings])) or "none"
                raise UsageError(f"no route or shared incoming named {name!r} in {project.path} (known: {known})")
            if outgoing and self.stopped_by is None:
                states = store.route_states()
                state = states.get(name)
                if effective_active(project.routes[name], states):
                    exp = await self.exporter.run_route(name, limit=self.limit, actor=self.actor)
                    result["outgoing"] = exp.to_json()
                    if exp.status != "ok" and result["status"] == "ok":
                        result["status"] = exp.status
                else:
                    result["outgoing"] = None
                    why = f" ({state.paused_reason})" if state is not None and state.paused_reason else ""
                    result["note"] = f"route {name} is inactive{why}: nothing exported"
        finally:
            await self.exporter.close()
        if self.stopped_by is not None:
            result["stopped_by"] = self.stopped_by
            if result["status"] == "ok":
                result["status"] = "stopped"
        by_status = empty_counts()
        for r in routes:
            for status, n in store.stats(r).by_status.items():
                by_status[status] += n
        result["by_status"] = by_status
        return result


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
    one = RoutePass(
        project,
        store,
        name,
        incoming=incoming,
        outgoing=outgoing,
        full=full,
        limit=limit,
        progress=progress,
        actor=actor,
    )
    return await one.run()
