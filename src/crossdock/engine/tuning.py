"""Interpreter settings for throughput, applied once by the commands that own their process (``run``, ``serve``,
``worker``, ``demo``, the benchmarks); never by the importer or exporter themselves, so a program that embeds
crossdock keeps its interpreter as it set it.

Both run their store calls in worker threads next to a busy event loop, and both allocate many short-lived
objects per record. CPython's defaults suit neither.
"""

from __future__ import annotations

import gc
import sys

#: Each SQLite step releases the GIL (one per statement, and one per row fetched from a cursor), and taking it
#: back waits up to the switch interval (5 ms by default) while the event loop's thread computes. So the store's
#: work could not overlap the parsing of an import, and a claim's thousand rows crawled back to an exporter busy
#: with HTTP. Measured here against 0.5 ms, 50 us gave: one-request-per-task delivery 64 % -> 78 % of bare
#: aiohttp, batched delivery 27k -> 33k tasks/s, no-op export +10 %, import unchanged.
SWITCH_INTERVAL = 0.00005
#: The young generation is collected every 700 allocations by default, and every hundredth collection walks the
#: whole heap. A bigger young generation, with what was loaded at start-up frozen out of the walks, saved
#: 10-15 % of an import's CPU time.
GC_YOUNG_THRESHOLD = 20_000

_applied = False


def tune_interpreter() -> None:
    """Apply the settings once per process; never loosen what the host application set tighter."""
    global _applied
    if _applied:
        return
    _applied = True
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        # modules, config and compiled transforms live for the whole process: keep them out of full collections
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
