"""Serve a mock system in the foreground: ``python -m crossdock.mock erp|shop [options]``.

For trying a project against realistic endpoints by hand, and for benchmarks that run
the target in its own process. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from crossdock.mock.erp import AUTH_MODES, AuthConfig, Catalogue, Erp
from crossdock.mock.failures import FailureConfig
from crossdock.mock.server import LOOPBACK
from crossdock.mock.shop import DEFAULT_COLLECTIONS, Shop


def _sku_status(text: str) -> tuple[str, int]:
    sku, sep, status = text.rpartition("=")
    if not sep or not sku:
        raise argparse.ArgumentTypeError(f"expected SKU=STATUS, got {text!r}")
    return sku, int(status)


def _add_failure_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("failures (also switchable at runtime: POST /_failures)")
    group.add_argument("--fail-every", type=int, default=0, metavar="N", help="every Nth request fails")
    group.add_argument("--fail-status", type=int, default=503, help="status for --fail-every/--fail-times")
    group.add_argument("--fail-times", type=int, default=0, metavar="N", help="first N requests per key fail")
    group.add_argument("--always-status", type=int, metavar="STATUS", help="answer every request with STATUS")
    group.add_argument("--status-for-sku", type=_sku_status, action="append", default=[], metavar="SKU=STATUS")
    group.add_argument("--rate-limit", type=int, metavar="N", help="at most N requests per second, then 429")
    group.add_argument("--retry-after", type=int, default=1, metavar="SECONDS", help="Retry-After sent with 429")
    group.add_argument("--slow-ms", type=int, default=0, metavar="MS", help="delay every answer")
    group.add_argument("--html", type=int, metavar="STATUS", help="answer an HTML page with STATUS (200/502)")
    group.add_argument("--truncated", action="store_true", help="cut every answer in half")
    group.add_argument("--drop-connection", action="store_true", help="close connections without answering")
    group.add_argument("--echo-headers", action="store_true", help="error answers quote the request's headers")


def _failures(args: argparse.Namespace) -> FailureConfig:
    return FailureConfig(
        fail_every=args.fail_every,
        fail_status=args.fail_status,
        fail_times=args.fail_times,
        always_status=args.always_status,
        status_for_skus=dict(args.status_for_sku),
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        slow_ms=args.slow_ms,
        html=args.html,
        truncated=args.truncated,
        drop_connection=args.drop_connection,
        echo_headers=args.echo_headers,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crossdock.mock", description=__doc__)
    systems = parser.add_subparsers(dest="system", required=True)

    erp = systems.add_parser("erp", help="a product catalogue source")
    erp.add_argument("--port", type=int, default=8081)
    erp.add_argument("--host", default=LOOPBACK)
    erp.add_argument("--products", type=int, default=1000)
    erp.add_argument("--seed", type=int, default=1)
    erp.add_argument("--page-size", type=int, default=100, help="default page size")
    erp.add_argument("--auth", choices=AUTH_MODES, default="none", help="demo credentials: see AuthConfig")
    erp.add_argument("--token-ttl", type=float, default=3600.0, help="OAuth2 token lifetime in seconds")
    _add_failure_options(erp)

    shop = systems.add_parser("shop", help="a target that records what it receives")
    shop.add_argument("--port", type=int, default=8082)
    shop.add_argument("--host", default=LOOPBACK)
    shop.add_argument("--no-record-bodies", action="store_true", help="count only (for benchmarks)")
    shop.add_argument("--collection", action="append", metavar="PATH", help="collections to serve (repeatable)")
    shop.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (SO_REUSEPORT); counts only, failures fixed at start",
    )
    _add_failure_options(shop)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app: web.Application
    extra: dict[str, Any] = {}
    if args.system == "erp":
        auth = AuthConfig(mode=args.auth, token_ttl=args.token_ttl)
        erp = Erp(
            Catalogue(args.products, args.seed),
            auth=auth,
            failures=_failures(args),
            default_page_size=args.page_size,
        )
        app = erp.app()
        extra = {"products": len(erp.catalogue), "auth": auth.mode}
    elif args.processes > 1:
        from crossdock.mock.processes import SharedCounters, serve_processes

        def build(counters: SharedCounters) -> web.Application:
            return Shop(
                failures=_failures(args), collections=args.collection or DEFAULT_COLLECTIONS, shared=counters
            ).app()

        print(
            f"mock shop on http://{args.host}:{args.port} processes={args.processes} (counts only; Ctrl-C stops)",
            flush=True,
        )
        return serve_processes(build, host=args.host, port=args.port, processes=args.processes)
    else:
        shop = Shop(
            failures=_failures(args),
            record_bodies=not args.no_record_bodies,
            collections=args.collection or DEFAULT_COLLECTIONS,
        )
        app = shop.app()
        extra = {"collections": sorted(shop.collections)}
    details = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"mock {args.system} on http://{args.host}:{args.port} {details} (Ctrl-C stops)", flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
