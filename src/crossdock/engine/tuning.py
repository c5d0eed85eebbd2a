"""Interpreter settings for throughput, applied once by the importer and the exporter.

Both run their store calls in worker threads next to a busy event loop, and both allocate many short-lived
objects per record. CPython's defaults suit neither.
"""

from __future__ import annotations

import gc
import sys

#: Each SQLite step releases the GIL, and taking it back waits up to the switch interval (5 ms by default) while
#: the event loop's thread computes, so the store's work could not overlap the parsing (import 76k -> 95k rows/s
#: in a raw pipeline). 0.5 ms keeps the switching overhead negligible.
SWITCH_INTERVAL = 0.0005
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
