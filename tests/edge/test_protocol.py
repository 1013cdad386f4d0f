"""The gateway's pure protocol logic: admission, frames, limits (no services)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, strategies as st

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
                                max_readings=10) == protocol.TelemetryFrame(4, [b'{"device_id": "a"}'], ["a"])
    assert protocol.parse_frame(frame(type="command_ack", command_id="c", start=5, status="rejected", reason="soc"),
                                max_bytes=200, max_readings=1) == protocol.CommandAck("c", 5, "rejected", "soc")


def telemetry(*envelopes: str) -> protocol.TelemetryFrame:
    return protocol.parse_frame(f'{{"type":"telemetry","seq":1,"readings":[{",".join(envelopes)}]}}'.encode(),
                                max_bytes=100_000, max_readings=10)


def test_envelopes_for_another_device_are_set_apart_in_order():
    ok, foreign = protocol.split_by_identity(telemetry('{"device_id": "a", "v": 1}', '{"device_id":"b"}', '"text"',
                                                       '{"v":2}', '{"device_id":7}'), "a")
    assert ok == [b'{"device_id": "a", "v": 1}']
    assert foreign == [(1, b'{"device_id":"b"}', "b"), (2, b'"text"', None), (3, b'{"v":2}', None),
                       (4, b'{"device_id":7}', None)]


def test_envelopes_are_published_as_the_device_sent_them():
    sent = ['{ "payload" : {"W": 1e999, "n": 123456789012345678901234567890}, "device_id":"a" }',
            '{"device_\\u0069d":"a","note":"caf\\u00e9 \u00e9"}']
    ok, foreign = protocol.split_by_identity(telemetry(*sent), "a")
    assert ok == [s.encode() for s in sent] and foreign == []


def test_the_claimed_identity_is_the_one_canonicalize_reads():
    # a repeated key: JSON readers keep the last one (orjson, the stdlib, msgspec), so must the gateway
    ok, foreign = protocol.split_by_identity(telemetry('{"device_id":"a","device_id":"b"}', '{"device_id":"b","device_id":"a"}'), "a")
    assert ok == [b'{"device_id":"b","device_id":"a"}']
    assert [claimed for _, _, claimed in foreign] == ["b"]


def test_a_frame_that_is_not_utf8_is_refused_whole():
    with pytest.raises(protocol.FrameError) as refused:
        protocol.parse_frame(b'{"type":"telemetry","seq":1,"readings":[{"device_id":"a","s":"\xff"}]}', max_bytes=1000,
                             max_readings=10)
    assert refused.value.reason == "malformed_frame"


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
    parsed = protocol.parse_frame('{"type":"telemetry","seq":1,"readings":[{"device_id":"a","w":NaN},'
                                  '{"device_id":"a","n":123456789012345678901234},{"device_id":"a","s":"\\ud800"},{"device_id":"b"}]}', max_bytes=1000, max_readings=10)
    ok, foreign = protocol.split_by_identity(parsed, "a")
    assert [json.loads(x) for x in ok] == [{"device_id": "a", "w": None}, {"device_id": "a", "n": 123456789012345678901234},
                                           {"device_id": "a", "s": "\ud800"}]
    assert foreign == [(3, b'{"device_id":"b"}', "b")]


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


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                                       max_size=3), max_leaves=8)
_envelope = st.one_of(_json, st.dictionaries(st.sampled_from(["device_id", "dialect", "payload"]), st.sampled_from(["a", "b", 1]) | _json,
                                             min_size=1, max_size=3))


@given(st.lists(_envelope, min_size=1, max_size=6), st.booleans())
def test_the_gateway_reads_every_envelope_as_canonicalize_will(envelopes, spaced):
    """What the gateway publishes parses (with orjson, as canonicalize does) to what the device sent, and it is
    published exactly when the device_id canonicalize will read is the certificate's."""
    texts = [json.dumps(e, separators=(", ", ": ") if spaced else (",", ":")) for e in envelopes]
    ok, foreign = protocol.split_by_identity(telemetry(*texts), "a")
    assert ok == [t.encode() for t, e in zip(texts, envelopes) if isinstance(e, dict) and e.get("device_id") == "a"]
    assert [orjson.loads(raw) for _, raw, _ in foreign] == [e for e in envelopes if not (isinstance(e, dict) and e.get("device_id") == "a")]
    assert all(claimed == (e.get("device_id") if isinstance(e, dict) and isinstance(e.get("device_id"), str) else None)
               for (i, _, claimed) in foreign for e in [envelopes[i]])


@given(st.lists(_envelope, min_size=1, max_size=6), st.integers(0, 2**40))
def test_the_standard_library_reading_of_a_frame_agrees_with_msgspecs(envelopes, seq):
    """The frames msgspec refuses (NaN literals...) are read by the standard library: on any frame both can read,
    the two readings give the same frame (each envelope's text aside, which the stdlib re-encodes)."""
    data = json.dumps({"type": "telemetry", "seq": seq, "readings": envelopes}).encode()
    fast = protocol.parse_frame(data, max_bytes=100_000, max_readings=10)
    lenient = protocol._parse_with_stdlib(data, None, max_readings=10)
    assert (fast.seq, fast.claimed) == (lenient.seq, lenient.claimed)
    assert [orjson.loads(r) for r in fast.readings] == [orjson.loads(r) for r in lenient.readings] == envelopes
