"""pause_after through the CLI: a route whose target refuses everything is switched off by crossdock, with the
reason stored and shown, and a person's activation resumes it."""

from __future__ import annotations

from typing import Any

CONCURRENCY = 4


def test_a_route_pauses_after_consecutive_failures_and_activation_resumes_it(project: Any, shop_factory: Any) -> None:
    shop = shop_factory(fail_every=1, fail_status=422)
    project.write_ndjson("data/in.ndjson", project.products(40))
    project.write_config(
        project.route_yaml(
            outgoing_extra=f"      concurrency: {CONCURRENCY}\n", extra="    pause_after: {failed: 10}\n"
        )
    )
    first = project.run("r")
    assert first["outgoing"]["paused"].startswith("paused after 10 consecutive failed tasks"), first["outgoing"]
    by_status = first["by_status"]
    # the deliveries already in flight when the 10th failed finish; nothing else starts, and the rest keep their
    # attempts (released unstarted, back to new)
    assert 10 <= by_status["failed"] < 10 + CONCURRENCY, by_status
    assert by_status["new"] == 40 - by_status["failed"], by_status
    assert shop.stats()["requests"] == by_status["failed"]
    assert all(t["attempts"] == 0 for t in project.tasks("--status", "new"))
    [route] = project.cli("routes", "list", "--json").json
    assert route["active"] is False
    assert route["paused_reason"].startswith("paused after 10 consecutive failed tasks at ")
    # while paused nothing is sent
    again = project.run("r", "--outgoing")
    assert again.get("note", "").startswith("route r is inactive"), again
    assert shop.stats()["requests"] == by_status["failed"]
    # a person fixes the target and activates the route: the pause is cleared and delivery resumes
    shop.set_failures()
    assert project.cli("routes", "activate", "r", "--json").json == {"name": "r", "active": True}
    [route] = project.cli("routes", "list", "--json").json
    assert (route["active"], route["paused_reason"]) == (True, None)
    resumed = project.run("r", "--outgoing")
    assert resumed["outgoing"]["paused"] is None
    assert resumed["by_status"]["finished"] == 40 - by_status["failed"]
