"""The platform's own PKI: a CA, the gateway's server certificate, one client certificate per device.

Pure crypto over ``cryptography`` (no database, no clock: ``now`` is passed in) plus the
few file helpers that keep secrets secret (``write_secret``: mode 0600, written then renamed).

- CA: EC P-256, self-signed, 10 years, ``BasicConstraints(ca=True, path_length=0)``.
- Gateway server certificate: SAN ``localhost``, ``127.0.0.1`` and any extra names,
  server-auth usage only.
- Device certificate: CN = device id and SAN URI ``urn:vpp:device:<device_id>`` (the
  identity the gateway reads), client-auth usage only, 1 year by default.

Serials are random 159-bit integers (RFC 5280 at most 20 octets), stored as lower-case hex.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEVICE_URI_PREFIX", "CA_DAYS", "SERVER_DAYS", "DEVICE_DAYS", "PkiPaths", "IssuedCert",
    "new_key", "make_ca", "make_server_cert", "make_device_cert", "device_id_of", "serial_hex",
    "fingerprint_sha256", "build_crl", "key_pem", "cert_pem", "write_secret", "write_public",
    "load_ca", "PkiError",
]

DEVICE_URI_PREFIX = "urn:vpp:device:"
CA_DAYS = 3650
SERVER_DAYS = 825
DEVICE_DAYS = 365
_BACKDATE = timedelta(minutes=5)  # clocks of devices run a little behind


class PkiError(ValueError):
    """The PKI cannot do what was asked (no CA yet, a certificate without a device identity); says what to do."""


@dataclass(frozen=True)
class PkiPaths:
    """Where the CA and the gateway's server certificate live (``<state_dir>/pki`` unless configured)."""

    root: Path

    @classmethod
    def of(cls, settings) -> "PkiPaths":
        return cls(Path(settings.pki_dir) if settings.pki_dir else Path(settings.state_dir) / "pki")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"


@dataclass(frozen=True)
class IssuedCert:
    """A certificate with its key, and the facts the certificate table records."""

    device_id: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def serial(self) -> str:
        return serial_hex(self.cert)

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.cert)

    def row(self) -> tuple:
        """``(serial, device_id, fingerprint, not_before, not_after)`` for the certificate table."""
        return (self.serial, self.device_id, self.fingerprint, self.cert.not_valid_before_utc, self.cert.not_valid_after_utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpp"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _serial() -> int:
    return x509.random_serial_number() >> 1  # 159 bits: positive and at most 20 octets


def make_ca(now: datetime, *, days: int = CA_DAYS, key: ec.EllipticCurvePrivateKey | None = None):
    """``(key, certificate)`` of a new self-signed platform CA."""
    key = key or new_key()
    name = _name("vpp platform CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(_serial()).not_valid_before(now - _BACKDATE).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert: x509.Certificate, subject: x509.Name, public_key, now: datetime, days: int,
          san: Sequence[x509.GeneralName], usage: x509.ObjectIdentifier) -> x509.Certificate:
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(_serial()).not_valid_before(now - _BACKDATE).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_server_cert(ca_key, ca_cert: x509.Certificate, now: datetime, *, extra_sans: Iterable[str] = (),
                     days: int = SERVER_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The gateway's ``(key, certificate)``: SAN localhost, 127.0.0.1 and ``extra_sans``, server-auth only."""
    names = list(dict.fromkeys(["localhost", "127.0.0.1", *extra_sans]))
    key = new_key()
    cert = _leaf(ca_key, ca_cert, _name("vpp gateway"), key.public_key(), now, days,
                 [_general_name(n) for n in names], ExtendedKeyUsageOID.SERVER_AUTH)
    return key, cert


def make_device_cert(ca_key, ca_cert: x509.Certificate, device_id: str, now: datetime, *, days: int = DEVICE_DAYS,
                     key: ec.EllipticCurvePrivateKey | None = None) -> IssuedCert:
    """A device's client certificate: CN = device id, SAN URI ``urn:vpp:device:<device_id>``, client-auth only."""
    key = key or new_key()
    cert = _leaf(ca_key, ca_cert, _name(device_id), key.public_key(), now, days,
                 [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)], ExtendedKeyUsageOID.CLIENT_AUTH)
    return IssuedCert(device_id, cert, key)


def device_id_of(cert: x509.Certificate) -> str:
    """The device identity of a client certificate: its SAN URI ``urn:vpp:device:<id>`` (the CN is not trusted)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError("certificate has no subject alternative name, so no device identity") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(DEVICE_URI_PREFIX)]
    if len(uris) != 1 or not uris[0][len(DEVICE_URI_PREFIX):]:
        raise PkiError(f"certificate must carry exactly one SAN URI {DEVICE_URI_PREFIX}<device_id>, found {uris}")
    return uris[0][len(DEVICE_URI_PREFIX):]


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def build_crl(ca_key, ca_cert: x509.Certificate, revoked: Iterable[tuple[str, datetime]], now: datetime, *,
              next_update: timedelta = timedelta(days=1)) -> x509.CertificateRevocationList:
    """A standard X.509 CRL signed by the CA, listing ``(serial hex, revoked_at)`` pairs."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + next_update)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    for serial, revoked_at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(revoked_at).build())
    return builder.sign(ca_key, hashes.SHA256())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_secret(path: Path, data: bytes) -> None:
    """Write a key (or anything under the PKI directory) readable by its owner only (0600)."""
    _write(Path(path), data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(Path(path), data, 0o644)


def load_ca(paths: PkiPaths):
    """``(key, certificate)`` of the platform CA, or PkiError saying to run ``vpp pki init``."""
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"no platform CA under {paths.root} (run: vpp pki init)") from None
    return key, cert
