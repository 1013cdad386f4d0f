"""A wall clock that stands still until released: a fast simulated clock starts when the test is ready."""

from __future__ import annotations

import time


class HeldWall:
    """``time.monotonic`` that stays at its creation time until ``release()``, then runs from there.

    A market clock at 600x moves two 5-minute intervals a wall second: on a loaded machine, the time
    between starting the service and the test's first request could close the gate the test bids for.
    """

    def __init__(self) -> None:
        self._base, self._released_at = time.monotonic(), None

    def release(self) -> None:
        self._released_at = time.monotonic()

    def __call__(self) -> float:
        return self._base if self._released_at is None else self._base + time.monotonic() - self._released_at
