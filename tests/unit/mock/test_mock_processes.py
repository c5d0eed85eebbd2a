"""``python -m crossdock.mock shop --processes N``: one port, N processes, counts shared, stopped together."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from alert_receivers import free_port

pytestmark = pytest.mark.slow


async def hit(port: int, n: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            # a new connection per request, so the kernel spreads them over the processes
            async with session.put(
                f"http://127.0.0.1:{port}/products/S{i}", json={"sku": f"S{i}"}, headers={"Connection": "close"}
            ) as reply:
                await reply.read()

        await asyncio.gather(*(one(i) for i in range(n)))
        async with session.post(f"http://127.0.0.1:{port}/_failures", json={"fail_every": 2}) as reply:
            refused = reply.status
        async with session.get(f"http://127.0.0.1:{port}/_stats") as reply:
            stats: dict[str, Any] = await reply.json()
        stats["failures_post"] = refused
        async with session.post(f"http://127.0.0.1:{port}/_reset") as reply:
            assert reply.status == 200
        async with session.get(f"http://127.0.0.1:{port}/_stats") as reply:
            stats["after_reset"] = (await reply.json())["requests"]
        return stats


def test_a_shop_in_three_processes_counts_for_all_and_stops_together() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossdock.mock", "shop", "--processes", "3", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "processes=3" in (proc.stdout.readline() if proc.stdout else "")
        deadline = time.monotonic() + 10
        while True:
            try:
                stats = asyncio.run(hit(port, 300))
                break
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert (stats["requests"], stats["accepted"], stats["by_status"]) == (300, 300, {"201": 300})
        assert stats["processes"] == 3 and sum(stats["requests_per_process"]) == 300
        assert sum(1 for n in stats["requests_per_process"] if n) >= 2, stats  # more than one process answered
        assert stats["failures_post"] == 409
        assert stats["after_reset"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
