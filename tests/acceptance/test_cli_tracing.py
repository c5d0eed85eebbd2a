"""OpenTelemetry through the real CLI: a webhook request's ``traceparent`` is continued by ``crossdock serve``, and
the record's delivery, made later by another process (``crossdock run --outgoing``), joins the same trace and
hands the target a ``traceparent`` in it. An OTLP/HTTP receiver on loopback gets the spans."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import pytest

from clirunner import Cli, free_port, wait_for
from otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver, recording_target

pytestmark = pytest.mark.slow

MakeCli = Callable[[str, dict[str, str]], Cli]
SECRET = "tracing-hook-secret"

CONFIG = """\
database: sqlite:///crossdock.db
routes:
  hook:
    incoming:
      source: {type: webhook, secret: "${HOOK_SECRET}"}
    identifier: sku
    outgoing:
      target: {type: http, url: "${TARGET_URL}", method: PUT, path: "/products/{sku}"}
      # once a year: serve's scheduler and workers leave the task alone, so another process delivers it
      schedule: "0 0 1 1 *"
"""


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_webhook_trace_continues_into_the_delivery_made_by_another_process(cli_factory: MakeCli) -> None:
    with otlp_receiver() as receiver, recording_target() as target:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        cli = cli_factory(CONFIG, {"HOOK_SECRET": SECRET, "TARGET_URL": target.url, **otel})
        port = free_port()
        serve = cli.start("serve", "--port", str(port))
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _up(f"{base}/api/v1/health"), 30, "serve to answer")
            trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
            status, body = _post(
                f"{base}/api/v1/webhooks/hook",
                orjson.dumps({"sku": "SKU-1", "price": 5}),
                {
                    "Content-Type": "application/json",
                    "X-Crossdock-Secret": SECRET,
                    "traceparent": f"00-{trace_id}-{caller_span}-01",
                },
            )
            assert status == 202, body
            task_id = orjson.loads(body)["tasks"][0]
        finally:
            code = cli.stop(serve)
        assert code == 0, cli.output(serve)
        # serve flushed its spans on the way out: the request's and the import's, in the caller's trace
        spans = {s.name: s for s in receiver.trace(trace_id)}
        hook = spans["POST /api/v1/webhooks/{name}"]
        imported = spans["import hook"]
        assert hook.parent_id == caller_span
        assert hook.kind == 2  # SERVER
        assert hook.attributes["http.response.status_code"] == 202
        assert hook.service == "crossdock"  # OTEL_SERVICE_NAME unset: crossdock's default
        assert imported.parent_id == hook.span_id
        assert imported.attributes["crossdock.route"] == "hook"
        assert imported.attributes["crossdock.tasks.new"] == 1
        assert target.received() == []

        # another process delivers the task: it reads the run's stored context and continues the trace
        result = cli.json("run", "hook", "--outgoing")
        assert result["by_status"]["finished"] == 1, result
        ((method, path, traceparent),) = target.received()
        assert (method, path) == ("PUT", "/products/SKU-1")
        assert traceparent is not None
        _version, sent_trace, sent_span, _flags = traceparent.split("-")
        assert sent_trace == trace_id
        wait_for(lambda: _named(receiver, trace_id, "deliver hook"), 10, "the delivery span")
        deliver = _named(receiver, trace_id, "deliver hook")
        assert deliver is not None
        assert deliver.span_id == sent_span  # the target's parent is the delivery span
        assert deliver.parent_id == imported.span_id
        assert deliver.attributes["crossdock.task.id"] == task_id
        assert deliver.attributes["crossdock.task.identifier"] == "SKU-1"
        assert deliver.attributes["crossdock.task.status"] == "finished"
        assert deliver.attributes["crossdock.task.attempt"] == 1
        assert deliver.attributes["http.response.status_code"] == 200
        # the export run has a span of its own (its own trace), which the delivery links to
        (export,) = [s for s in receiver.spans if s.name == "export hook"]
        assert export.attributes["crossdock.tasks.claimed"] == 1
        assert deliver.links == (export.span_id,)


def test_no_otel_settings_no_traces(cli_factory: MakeCli) -> None:
    """Installed but not asked for: nothing is exported and targets get no ``traceparent``."""
    with recording_target() as target:
        config = CONFIG.replace('{type: webhook, secret: "${HOOK_SECRET}"}', "{type: file, path: in.ndjson}")
        cli = cli_factory(config, {"TARGET_URL": target.url})
        (cli.root / "in.ndjson").write_text('{"sku": "SKU-1"}\n')
        result = cli.json("run", "hook")
        assert result["by_status"]["finished"] == 1, result
        assert [t for _, _, t in target.received()] == [None]


def _named(receiver: OtlpReceiver, trace_id: str, name: str) -> ReceivedSpan | None:
    return next((s for s in receiver.trace(trace_id) if s.name == name), None)
