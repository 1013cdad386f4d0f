"""Keys of the buckets a flow spreads devices over: a stable hash, memoized per device id.

Flows keep per-device state in a few dozen buckets rather than one bytewax key per device (the per-key
cost dominated; see bench/README.md). The bucket of a device must be the same on every process and
every run, since snapshots are stored per bucket: crc32, not Python's salted ``hash``.
"""

from __future__ import annotations

import zlib
from typing import Callable, Generic, TypeVar

__all__ = ["stable_index", "BucketOf"]

K = TypeVar("K")


def stable_index(text: str, n: int) -> int:
    """A stable hash of ``text`` into ``range(n)`` (crc32: the same on every process and run)."""
    return zlib.crc32(text.encode()) % n


class BucketOf(dict, Generic[K]):
    """``bucket_of[device_id]``: the device's bucket key, ``key_of(stable_index(device_id, n))``.

    A dict, so that the lookup of a known device is one C-level subscript; at most ``limit`` ids are
    remembered (ids seen, not state: forgetting them only costs a hash).
    """

    def __init__(self, n: int, key_of: Callable[[int], K] = lambda i: i, limit: int = 1_000_000):
        super().__init__()
        self.n, self.key_of, self.limit = n, key_of, limit

    def __missing__(self, device_id: str) -> K:
        if len(self) >= self.limit:
            self.clear()
        key = self[device_id] = self.key_of(stable_index(device_id, self.n))
        return key
