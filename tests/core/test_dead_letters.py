"""A dead letter always fits the DLQ topic and says where its message came from."""

from __future__ import annotations

import hashlib

import pytest

from vpp.dead_letters import DETAIL_KEEP_CHARS, RAW_KEEP_BYTES, dead_letter_record
from vpp.serde import Serde

WHERE = {"source_topic": "telemetry.raw", "source_partition": 2, "source_offset": 99, "source_timestamp": 1_700}


@pytest.mark.parametrize("size", [0, 1, RAW_KEEP_BYTES])
def test_a_message_that_fits_is_kept_whole(size):
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    record = dead_letter_record("malformed_json", "why", raw, **WHERE)
    assert record["raw"] == raw and not record["raw_truncated"]
    assert record["raw_length"] == size and record["raw_sha256"] == hashlib.sha256(raw).hexdigest()


def test_a_message_near_the_producer_limit_keeps_a_prefix_its_length_and_hash_and_encodes_small():
    raw = b"\xff" * 999_000
    record = dead_letter_record("malformed_json", "d" * 100_000, raw, **WHERE)
    assert record["raw_truncated"] and record["raw"] == raw[:RAW_KEEP_BYTES]
    assert record["raw_length"] == 999_000 and record["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert len(record["detail"]) < DETAIL_KEEP_CHARS + 50
    encoded = Serde.local().encode("telemetry.dlq", record)
    assert len(encoded) < 100_000  # far below the broker's 1,000,000-byte limit


def test_a_tombstone_is_an_empty_message_with_its_coordinates():
    record = dead_letter_record("tombstone", "null value", None, **WHERE)
    assert record["raw"] == b"" and record["raw_length"] == 0
    assert (record["source_topic"], record["source_partition"], record["source_offset"], record["source_timestamp"]) == \
        ("telemetry.raw", 2, 99, 1_700)
