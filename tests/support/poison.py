"""One poison message of each kind for an Avro topic, and a good canonical reading to build them from
(shared by the poison, chaos and dump tests)."""

from __future__ import annotations

from vpp.serde import Serde

POISON_REASONS = ["tombstone", "unknown_schema", "wrong_schema", "malformed_avro", "malformed_avro"]
DEVICE = "pw-poison-1"


def poison_values(serde: Serde, commands_topic: str, good: bytes) -> list[bytes | None]:
    """A tombstone, an unknown schema id, another topic's record, junk bytes, a truncated record."""
    other = serde.encode(commands_topic, {"command_id": "c-x", "node_path": "us", "target_w": 1.0, "start": 1,
                                          "end": 2, "issued_by": "t", "program": None})
    unknown = b"\x00" + (987_654).to_bytes(4, "big") + good[5:]
    return [None, unknown, other, b"junk!", good[: len(good) // 2]]


def canonical_reading(ts_ms: int, soc: float = 50.0) -> dict:
    return {"device_id": DEVICE, "site_id": "site-p", "region_path": "us/pz/site-p", "ts": ts_ms,
            "dialect": "tesla-gateway/1", "soc_pct": soc, "battery_w": 100.0, "solar_w": 0.0, "load_w": 100.0,
            "grid_w": 0.0, "grid_connected": True, "capacity_wh": 13_500.0, "flags": []}
