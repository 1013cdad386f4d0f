"""The gateway's protocol logic, pure: who may connect, what a frame means, limits and strikes.

No sockets, no clocks (``now`` is passed in), no broker: ``edge.gateway`` does the I/O.

Frames (JSON text, one object each, edge.md section 2):

- ``{"type": "telemetry", "seq": N, "readings": [ENVELOPE, ...]}`` -> ``ack`` or ``error``;
- ``{"type": "command_ack", "command_id": ..., "start": ..., "status": "applied"|"rejected", "reason": ...}``.

An envelope is published unchanged, its bytes as the device sent them (edge.md section 2), except in a frame that
only the standard library can read (a NaN or Infinity literal, which JSON does not allow, a lone surrogate escape):
its envelopes are re-encoded as compact JSON, NaN and Infinity as null (or as literals beside an integer beyond 64
bits), and canonicalize rejects such a reading as it would have. A number beyond a double written as digits
(``1e999``) travels unchanged; canonicalize rejects it too. An envelope whose ``device_id`` is not the certificate's identity (or that
has none, or is not an object) is not published: it becomes a dead letter ``identity_mismatch``
and the frame's answer is an ``error`` naming it; the frame's other envelopes are published (each
stands alone; a device resending the frame would only make duplicates, which canonicalize drops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import orjson

__all__ = ["refusal", "tls_refusal_reason", "TelemetryFrame", "CommandAck", "FrameError", "parse_frame", "split_by_identity",
           "TokenBucket", "Strikes", "command_frame", "IDENTITY_MISMATCH"]

IDENTITY_MISMATCH = "identity_mismatch"


def refusal(row: Any, cert_device_id: str, fingerprint: str, registered: bool, now: datetime) -> str | None:
    """Why a TLS-verified client certificate may not open a session (None: it may).

    ``row`` is its line of the certificate table (None when the table does not know the serial:
    a certificate the table lost is refused, the table is the authority).
    """
    if row is None:
        return "unknown_certificate"
    if row.fingerprint_sha256 != fingerprint or row.device_id != cert_device_id:
        return "certificate_mismatch"
    if row.status == "revoked":
        return "revoked"
    if row.status == "superseded":
        return "superseded"
    if not row.not_before <= now <= row.not_after:
        return "expired"
    if not registered:
        return "unknown_device"
    return None


#: OpenSSL's verify codes of a client certificate, as refusal reasons (the rest: ``bad_certificate``)
_VERIFY_REASONS = {
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    2: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: "unknown_ca",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: another CA's certificate
    21: "unknown_ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    23: "revoked",  # X509_V_ERR_CERT_REVOKED (only with a CRL loaded in the context)
}
#: OpenSSL's reasons of a refused handshake without a verify code
_TLS_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_certificate",
    "UNSUPPORTED_PROTOCOL": "tls_version",
    "NO_SHARED_CIPHER": "tls_version",
    "HTTP_REQUEST": "not_tls",
    "WRONG_VERSION_NUMBER": "not_tls",
}


def tls_refusal_reason(exc: Exception) -> str:
    """The refusal reason of a TLS handshake OpenSSL failed (``ssl.SSLError``), as the handshake metric counts it."""
    code = getattr(exc, "verify_code", None)
    if code is not None:
        return _VERIFY_REASONS.get(code, "bad_certificate")
    if type(exc).__name__ == "SSLEOFError":
        return "handshake_aborted"
    return _TLS_REASONS.get(getattr(exc, "reason", None) or "", "tls_error")


class FrameError(ValueError):
    """A frame the gateway answers with an ``error``; ``reason`` is a short code, ``seq`` the frame's if known."""

    def __init__(self, reason: str, detail: str, seq: Any = None):
        super().__init__(detail)
        self.reason, self.detail, self.seq = reason, detail, seq

    def answer(self) -> dict[str, Any]:
        return {"type": "error", "seq": self.seq, "reason": f"{self.reason}: {self.detail}"}


class TelemetryFrame(NamedTuple):  # a tuple: built for every frame, and a frozen dataclass's __init__ costs ~1 us
    """A telemetry frame: each envelope's JSON text as the device sent it, and the ``device_id`` it claims (None:
    it has none, or is not an object)."""

    seq: int
    readings: list[bytes]
    claimed: list[Any]


@dataclass(frozen=True)
class CommandAck:
    command_id: str
    start_ms: int
    status: str
    reason: str | None


class _Telemetry(msgspec.Struct, gc=False):
    """A telemetry frame as msgspec reads it: its envelopes still JSON text (``Raw``: where each begins and ends)."""

    type: Any = None
    seq: Any = None
    readings: list[msgspec.Raw] | None = None


class _Claim(msgspec.Struct, gc=False):
    device_id: Any = None


_TELEMETRY = msgspec.json.Decoder(_Telemetry)
_CLAIM = msgspec.json.Decoder(_Claim)  # reads an envelope's device_id, skips the rest


def parse_frame(data: str | bytes, *, max_bytes: int, max_readings: int) -> TelemetryFrame | CommandAck:
    """A device's frame, or FrameError (too large, not JSON, unknown type, too many readings, bad fields).

    The envelopes of a telemetry frame are not built as Python objects: msgspec finds where each one's text begins
    and ends, then reads only its ``device_id``. Any other frame, and one msgspec refuses (not UTF-8, not JSON, NaN or
    Infinity literals, a lone surrogate escape, readings that are not a list), is read by the standard library.
    """
    if len(data) > max_bytes:
        raise FrameError("frame_too_large", f"{len(data)} bytes, the limit is {max_bytes}")
    try:
        frame = _TELEMETRY.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _parse_with_stdlib(data, exc, max_readings)
    if frame.type != "telemetry" or (isinstance(data, bytes) and not data.isascii() and not _is_utf8(data)):
        return _parse_with_stdlib(data, None, max_readings)  # msgspec does not look inside the values it skips
    readings = None
    if frame.readings is not None:
        readings = [bytes(raw) for raw in frame.readings], [_claim(raw) for raw in frame.readings]
    return _checked({"type": frame.type, "seq": frame.seq}.get, readings, max_readings)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


def _claim(raw: msgspec.Raw) -> Any:
    try:
        return _CLAIM.decode(raw).device_id
    except msgspec.ValidationError:  # not an object
        return None


def _parse_with_stdlib(data: str | bytes, refused: Exception | None, max_readings: int) -> TelemetryFrame | CommandAck:
    """A frame read by the standard library; a telemetry frame's envelopes re-encoded (NaN -> null)."""
    try:
        frame = json.loads(data.decode() if isinstance(data, bytes) else data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FrameError("malformed_frame", f"not JSON: {refused or exc}") from None
    if not isinstance(frame, dict):
        raise FrameError("malformed_frame", "a frame is one JSON object")
    envelopes = frame.get("readings")
    readings = None
    if isinstance(envelopes, list):
        readings = ([_dumps(e) for e in envelopes], [e.get("device_id") if isinstance(e, dict) else None for e in envelopes])
    return _checked(frame.get, readings, max_readings)


def _checked(value, readings: tuple[list[bytes], list[Any]] | None, max_readings: int) -> TelemetryFrame | CommandAck:
    """The frame of these fields (``value(name)``: a field's value, None when absent), or FrameError."""
    kind, seq = value("type"), value("seq")
    if kind == "telemetry":
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise FrameError("malformed_frame", "telemetry needs an integer seq")
        if readings is None or not readings[0]:
            raise FrameError("malformed_frame", "telemetry needs a non-empty readings list", seq)
        if len(readings[0]) > max_readings:
            raise FrameError("too_many_readings", f"{len(readings[0])} readings, the limit is {max_readings}", seq)
        return TelemetryFrame(seq, *readings)
    if kind == "command_ack":
        command_id, start, status, reason = (value(k) for k in ("command_id", "start", "status", "reason"))
        if not isinstance(command_id, str) or isinstance(start, bool) or not isinstance(start, int):
            raise FrameError("malformed_frame", "command_ack needs a command_id string and an integer start (epoch ms)", seq)
        if status not in ("applied", "rejected") or not (reason is None or isinstance(reason, str)):
            raise FrameError("malformed_frame", "command_ack status is applied or rejected, reason a string or null", seq)
        return CommandAck(command_id, start, status, reason)
    raise FrameError("malformed_frame", f"unknown frame type {kind!r} (telemetry or command_ack)", seq)


def split_by_identity(frame: TelemetryFrame, identity: str) -> tuple[list[bytes], list[tuple[int, bytes, str | None]]]:
    """``(envelopes to publish, [(index, envelope, claimed device_id)] that speak for someone else)``."""
    ok: list[bytes] = []
    foreign: list[tuple[int, bytes, str | None]] = []
    for i, (raw, claimed) in enumerate(zip(frame.readings, frame.claimed)):
        if claimed == identity:
            ok.append(raw)
        else:
            foreign.append((i, raw, claimed if isinstance(claimed, str) else None))
    return ok, foreign


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate: the stdlib writes it as it came
        return json.dumps(value, separators=(",", ":")).encode()


def command_frame(record: dict[str, Any]) -> dict[str, Any]:
    """A ``device.commands`` record as the frame sent to its device (every field of fleet.md section 2)."""
    return {"type": "command", **record}


@dataclass
class TokenBucket:
    """``rate`` frames per second, bursts of up to ``rate`` (one second's worth)."""

    rate: float
    tokens: float = -1.0
    at: float = 0.0

    def allow(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.rate, now
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Strikes:
    """Limit violations in a sliding window; ``exceeded`` once a device keeps violating (``limit`` in ``window_s``)."""

    limit: int = 20
    window_s: float = 10.0
    times: list[float] = field(default_factory=list)

    def add(self, now: float) -> bool:
        self.times = [t for t in self.times if now - t < self.window_s]
        self.times.append(now)
        return len(self.times) >= self.limit
