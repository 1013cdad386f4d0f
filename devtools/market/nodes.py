"""Which node paths the market takes bids for: the nodes of the asset registry (PostgreSQL ``assets``).

A node is any prefix of a device's region path (``us``, ``us/ca``, ... down to its site) or a
device itself (``<region_path>/<device_id>``). ``known_nodes_of(rows)`` is the pure part;
``AssetNodes`` reads the table, keeps the set for ``refresh_s`` and, when the database cannot be
reached, goes on with the last set it read (a market must not stop bidding because PostgreSQL
blinked). ``AssetNodes.connect`` returns None when no asset registry is reachable at start: the
market then checks no nodes, and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["AssetNodes", "known_nodes_of"]

log = logging.getLogger("devtools.market")
_QUERY = "SELECT DISTINCT region_path, device_id FROM assets"


def known_nodes_of(rows: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Every node path of ``(region_path, device_id)`` rows."""
    nodes: set[str] = set()
    for region_path, device_id in rows:
        parts = region_path.strip("/").split("/")
        nodes.update("/".join(parts[: k + 1]) for k in range(len(parts)))
        nodes.add(f"{region_path.strip('/')}/{device_id}")
    return frozenset(nodes)


class AssetNodes:
    """``nodes(node_path) -> bool`` over the assets table, read at most every ``refresh_s``."""

    def __init__(self, read_rows: Callable[[], list[tuple[str, str]]], *, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self._read_rows, self._refresh_s, self._clock = read_rows, refresh_s, clock
        self._lock = threading.Lock()
        self._nodes = known_nodes_of(read_rows())
        self._read_at = clock()

    @classmethod
    def connect(cls, dsn: str, **kwargs) -> "AssetNodes | None":
        import psycopg

        def read_rows() -> list[tuple[str, str]]:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                return conn.execute(_QUERY).fetchall()

        try:
            return cls(read_rows, **kwargs)
        except psycopg.Error as exc:
            log.warning("no asset registry reachable (%s): bids are not checked against known nodes",
                        type(exc).__name__)
            return None

    def __call__(self, node_path: str) -> bool:
        with self._lock:
            if self._clock() - self._read_at >= self._refresh_s or node_path.strip("/") not in self._nodes:
                self._refresh()
            return node_path.strip("/") in self._nodes

    def _refresh(self) -> None:
        if self._clock() - self._read_at < 1.0:  # an unknown node forces a read, at most once a second
            return
        try:
            self._nodes = known_nodes_of(self._read_rows())
        except Exception as exc:  # noqa: BLE001 - keep the last set; say why
            log.warning("reading the asset registry failed (%s: %s): using the nodes read before",
                        type(exc).__name__, exc)
        self._read_at = self._clock()
