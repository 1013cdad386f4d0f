"""The gateway's pure protocol logic: admission, frames, limits (no services)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from edge import protocol
from sinks.certificates import CertRow

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
ROW = CertRow("ab12", "pw-1", "f" * 64, NOW - timedelta(days=1), NOW + timedelta(days=364), "active", NOW,
              None, None, None, NOW)


@pytest.mark.parametrize("row, device, fingerprint, registered, expected", [
    (ROW, "pw-1", "f" * 64, True, None),
    (None, "pw-1", "f" * 64, True, "unknown_certificate"),
    (ROW, "pw-2", "f" * 64, True, "certificate_mismatch"),
    (ROW, "pw-1", "e" * 64, True, "certificate_mismatch"),
    (replace(ROW, status="revoked"), "pw-1", "f" * 64, True, "revoked"),
    (replace(ROW, status="superseded"), "pw-1", "f" * 64, True, "superseded"),
    (replace(ROW, not_after=NOW - timedelta(seconds=1)), "pw-1", "f" * 64, True, "expired"),
    (ROW, "pw-1", "f" * 64, False, "unknown_device"),
])
def test_refusal(row, device, fingerprint, registered, expected):
    assert protocol.refusal(row, device, fingerprint, registered, NOW) == expected


def frame(**fields) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize("data, reason", [
    ("not json", "malformed_frame"),
    ("[1]", "malformed_frame"),
    (frame(type="telemetry", seq="1", readings=[{}]), "malformed_frame"),
    (frame(type="telemetry", seq=1, readings=[]), "malformed_frame"),
    (frame(type="telemetry", seq=1, readings=[{}] * 11), "too_many_readings"),
    (frame(type="telemetry", seq=1, readings=[{"x": "y" * 200}]), "frame_too_large"),
    (frame(type="command_ack", command_id="c", start=1, status="done"), "malformed_frame"),
    (frame(type="command_ack", command_id="c", start="1", status="applied"), "malformed_frame"),
    (frame(type="subscribe"), "malformed_frame"),
])
def test_frames_that_are_refused(data, reason):
    with pytest.raises(protocol.FrameError) as refused:
        protocol.parse_frame(data, max_bytes=100, max_readings=10)
    assert refused.value.reason == reason
    assert refused.value.answer()["type"] == "error"


def test_frames_that_are_understood():
    assert protocol.parse_frame(frame(type="telemetry", seq=4, readings=[{"device_id": "a"}]), max_bytes=100,
                                max_readings=10) == protocol.TelemetryFrame(4, [{"device_id": "a"}])
    assert protocol.parse_frame(frame(type="command_ack", command_id="c", start=5, status="rejected", reason="soc"),
                                max_bytes=200, max_readings=1) == protocol.CommandAck("c", 5, "rejected", "soc")


def test_envelopes_for_another_device_are_set_apart_in_order():
    ok, foreign = protocol.split_by_identity([{"device_id": "a", "v": 1}, {"device_id": "b"}, "text", {"v": 2}], "a")
    assert [json.loads(x) for x in ok] == [{"device_id": "a", "v": 1}]
    assert [(i, json.loads(raw), claimed) for i, raw, claimed in foreign] == [(1, {"device_id": "b"}, "b"), (2, "text", None),
                                                                              (3, {"v": 2}, None)]


def test_token_bucket_allows_the_rate_with_a_burst_of_one_second():
    bucket = protocol.TokenBucket(rate=20)
    assert sum(bucket.allow(100.0) for _ in range(30)) == 20
    assert bucket.allow(100.04) is False
    assert bucket.allow(100.1) is True  # 0.1 s after the burst: two frames back at 20/s


def test_strikes_count_only_recent_violations():
    strikes = protocol.Strikes(limit=3, window_s=10)
    assert [strikes.add(t) for t in (0, 1, 20, 21)] == [False, False, False, False]
    assert strikes.add(22) is True


def test_readings_orjson_refuses_still_travel():
    parsed = protocol.parse_frame('{"type":"telemetry","seq":1,"readings":[{"device_id":"a","w":NaN,"n":123456789012345678901234}]}',
                                  max_bytes=1000, max_readings=10)
    ok, foreign = protocol.split_by_identity(parsed.readings, "a")
    assert foreign == [] and json.loads(ok[0])["n"] == 123456789012345678901234


def _ssl_error(cls, reason: str | None = None, verify_code: int | None = None):
    import ssl

    exc = getattr(ssl, cls)(1, f"[SSL: {reason}]")
    exc.reason = reason
    if verify_code is not None:
        exc.verify_code = verify_code
    return exc


@pytest.mark.parametrize("cls, reason, verify_code, expected", [
    ("SSLError", "PEER_DID_NOT_RETURN_A_CERTIFICATE", None, "no_certificate"),
    ("SSLCertVerificationError", "CERTIFICATE_VERIFY_FAILED", 20, "unknown_ca"),  # another CA's certificate
    ("SSLCertVerificationError", "CERTIFICATE_VERIFY_FAILED", 18, "unknown_ca"),  # self-signed
    ("SSLCertVerificationError", "CERTIFICATE_VERIFY_FAILED", 10, "expired"),
    ("SSLCertVerificationError", "CERTIFICATE_VERIFY_FAILED", 9, "not_yet_valid"),
    ("SSLCertVerificationError", "CERTIFICATE_VERIFY_FAILED", 7, "bad_certificate"),  # a bad signature
    ("SSLError", "UNSUPPORTED_PROTOCOL", None, "tls_version"),
    ("SSLError", "HTTP_REQUEST", None, "not_tls"),
    ("SSLEOFError", None, None, "handshake_aborted"),
    ("SSLError", "SOMETHING_NEW", None, "tls_error"),
])
def test_a_handshake_refused_by_tls_has_a_reason(cls, reason, verify_code, expected):
    assert protocol.tls_refusal_reason(_ssl_error(cls, reason, verify_code)) == expected
