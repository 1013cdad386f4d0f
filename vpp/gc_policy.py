"""Garbage-collector settings for a process that runs a flow.

A flow worker allocates millions of short-lived objects (a dict and a tuple
per reading, a message per record) and holds large, long-lived state. With
CPython's default thresholds (a young collection every 700 allocations,
full collections as the heap grows) the aggregate benchmark process spent
6-7 s of 26 s in the collector (part of it while generating its input), the
flow ran about 10 % faster with collection off, and the pauses land in the
burst at a window's close. The
objects of a flow are almost never in reference cycles, so collecting less
often costs little memory.
"""

from __future__ import annotations

import gc

__all__ = ["tune_for_streaming", "STREAMING_THRESHOLDS"]

#: Young collection every 50,000 net allocations; a full one every 100 middle ones (and CPython's own
#: rule: only when the long-lived objects grew by a quarter since the last).
STREAMING_THRESHOLDS = (50_000, 20, 100)


def tune_for_streaming() -> None:
    """Move what exists now (imports, the built flow) out of the collector's way; collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*STREAMING_THRESHOLDS)
