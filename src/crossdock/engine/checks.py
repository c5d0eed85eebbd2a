"""`crossdock check`: every config error at once, transformer tests, and what the project will run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossdock.errors import ConfigError, ConfigErrors


@dataclass
class CheckReport:
    config: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    tests_run: int = 0

    def lines(self) -> list[str]:
        out = [*self.info]
        out += [f"warning: {w}" for w in self.warnings]
        out += self.errors
        if self.errors:
            out.append(f"{self.config}: {len(self.errors)} error(s)")
        else:
            out.append(f"{self.config}: ok ({len(self.routes)} route(s), {self.tests_run} transformer test(s) passed)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "ok": not self.errors,
            "errors": self.errors,
            "warnings": self.warnings,
            "routes": self.routes,
            "tests_run": self.tests_run,
        }


def check_project(path: Path, *, database: str | None = None) -> CheckReport:
    from crossdock.engine.project import load_project

    report = CheckReport(str(path))
    try:
        project = load_project(path)
    except ConfigErrors as exc:
        report.errors += [f"config error: {e.message}" for e in exc.errors]
        return report
    except ConfigError as exc:
        report.errors.append(f"config error: {exc.message}")
        return report
    report.routes = sorted(project.routes)
    if database is not None:
        _check_database(project, database, report)
    for name, route in sorted(project.routes.items()):
        cfg = route.config
        flags = [
            f for f, on in (("inactive", not cfg.active), ("realtime", cfg.realtime), ("waiting", cfg.waiting)) if on
        ]
        source = route.incoming.name if route.incoming.shared else route.incoming.source_options.type
        report.info.append(
            f"route {name}: {source} → {route.target_options.type}"
            f" (incoming {route.incoming.config.schedule or 'on demand'},"
            f" outgoing {cfg.outgoing.schedule or 'continuous under serve/worker'})"
            + (f" [{', '.join(flags)}]" if flags else "")
        )
    for name, incoming in sorted(project.incomings.items()):
        users = project.routes_of(incoming)
        active = [r.name for r in users if r.config.active]
        report.info.append(f"shared incoming {name}: feeds {', '.join(r.name for r in users) or 'no route'}")
        if not active:
            file, line = project.loaded.source.where(("incomings", name))
            report.warnings.append(f"{file}:{line}: shared incoming {name} is used by no active route")
    _run_tests(project, report)
    # a test's diff or a route line may quote a value that came from a secret file or variable
    for lines in (report.errors, report.warnings, report.info):
        lines[:] = [project.redact(line) for line in lines]
    return report


def _run_tests(project: Any, report: CheckReport) -> None:
    """Run the ``tests:`` of named transformers and routes; a failure is an error with a readable diff."""
    from crossdock.config.models import NamedTransformer
    from crossdock.engine.preview import route_pipeline
    from crossdock.transform import compile_steps, run_transform_tests

    config = project.loaded.config
    named = config.transformer_steps()
    suites: list[tuple[tuple[str, ...], Any, list[dict[str, Any]]]] = []
    for name, transformer in sorted(config.transformers.items()):
        if isinstance(transformer, NamedTransformer) and transformer.tests:
            pipeline = compile_steps(transformer.steps, named=named, storages=project.storages)
            suites.append((("transformers", name, "tests"), pipeline, transformer.tests))
    for name, route in sorted(project.routes.items()):
        if route.config.tests:
            suites.append((("routes", name, "tests"), route_pipeline(project, route), route.config.tests))
    for path, pipeline, tests in suites:
        failures = run_transform_tests(pipeline, tests)
        report.tests_run += len(tests) - len(failures)
        for failure in failures:
            file, line = project.loaded.source.where((*path, failure.index))
            where = ".".join(path) + f"[{failure.index}]"
            report.errors.append(f"test failed: {file}:{line}: {where}: {failure.message}\n{failure.diff}")


def _check_database(project: Any, url: str, report: CheckReport) -> None:
    """Open the ``--db`` database; its password never shows, also not in a driver's error about the URL."""
    from crossdock.errors import CrossdockError
    from crossdock.redact import redacting_logs, url_secrets
    from crossdock.store import open_store

    hide = project.redact.extended(url_secrets(url))
    try:
        with redacting_logs(hide, "psycopg", "psycopg.pool"):
            store = open_store(url, base=project.root)
    except (CrossdockError, OSError) as exc:
        report.errors.append(hide(f"config error: --db {url}: cannot open the database: {exc}"))
        return
    except Exception as exc:  # a driver's own error for a malformed URL: still one line, still redacted
        report.errors.append(hide(f"config error: --db {url}: cannot open the database: {type(exc).__name__}: {exc}"))
        return
    report.info.append(f"database {store.backend}: schema at version {store.upgrade()}")
    store.close()
