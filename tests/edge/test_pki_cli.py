"""`vpp pki` against the real database (edge.md section 1)."""

from __future__ import annotations

import json
import stat
import time

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge.pki import DEVICE_URI_PREFIX, device_id_of, serial_hex
from cli.main import main


@pytest.fixture
def vpp(edge_settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VPP_POSTGRES_DSN", edge_settings.postgres_dsn)
    monkeypatch.setenv("VPP_PKI_DIR", edge_settings.pki_dir)

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args[:2], "--state-dir", str(tmp_path / "state"), *args[2:]])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("pki", "init")[0] == 0
    return run


def certs(dsn: str) -> dict[str, tuple]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT serial, device_id, status, reason FROM device_certificates")}


def test_init_makes_a_p256_ca_and_a_server_certificate_readable_by_the_owner_only(vpp, edge_settings):
    from pathlib import Path

    pki_dir = Path(edge_settings.pki_dir)
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert stat.S_IMODE((pki_dir / name).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate((pki_dir / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ca_serial = serial_hex(ca)
    assert vpp("pki", "init")[0] == 0  # a second init keeps the CA (devices hold certificates it signed)
    assert serial_hex(x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())) == ca_serial


def test_issue_writes_a_client_certificate_with_the_device_identity(vpp, edge_settings, tmp_path):
    code, _, _ = vpp("pki", "issue", "pw-1", "--out", str(tmp_path / "pw-1"), "--days", "30")
    assert code == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "pw-1" / "device.pem").read_bytes())
    assert device_id_of(cert) == "pw-1"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "pw-1"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value._usages == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    assert stat.S_IMODE((tmp_path / "pw-1" / "device.key").stat().st_mode) == 0o600
    assert (tmp_path / "pw-1" / "ca.pem").exists()
    assert certs(edge_settings.postgres_dsn) == {serial_hex(cert): ("pw-1", "active", None)}
    assert DEVICE_URI_PREFIX == "urn:vpp:device:"


def test_a_device_not_in_the_registry_gets_no_certificate(vpp, edge_settings, tmp_path):
    code, _, err = vpp("pki", "issue", "ghost-1", "--out", str(tmp_path / "g"))
    assert code == 1 and "not in the asset registry: ghost-1" in err
    assert certs(edge_settings.postgres_dsn) == {} and not (tmp_path / "g").exists()


def test_issue_all_gives_every_registered_device_its_own_directory(vpp, edge_settings, tmp_path):
    from edge_helpers import register

    register(edge_settings.postgres_dsn, *(f"bulk-{i:04d}" for i in range(300)))
    started = time.monotonic()
    assert vpp("pki", "issue", "--all", "--out", str(tmp_path / "all"))[0] == 0
    elapsed = time.monotonic() - started
    devices = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert len(devices) == 302 and devices[:2] == ["bulk-0000", "bulk-0001"]
    assert device_id_of(x509.load_pem_x509_certificate((tmp_path / "all" / "pw-2" / "device.pem").read_bytes())) == "pw-2"
    assert len(certs(edge_settings.postgres_dsn)) == 302
    assert elapsed < 30, f"{elapsed:.1f} s for 302 certificates"


def test_rotate_revoke_list_and_crl(vpp, edge_settings, tmp_path):
    assert vpp("pki", "rotate", "pw-1", "--out", str(tmp_path / "r"))[0] == 1  # nothing to rotate yet
    vpp("pki", "issue", "pw-1", "--out", str(tmp_path / "old"))
    assert vpp("pki", "rotate", "pw-1", "--out", str(tmp_path / "new"))[0] == 0
    listed = json.loads(vpp("pki", "list", "--device", "pw-1", "--json")[1])
    assert [c["status"] for c in listed] == ["active", "active"]  # the old one works until the new one is used
    old_serial = listed[0]["serial"]
    code, out, _ = vpp("pki", "revoke", old_serial, "--reason", "keyCompromise")
    assert code == 0 and old_serial in out
    assert vpp("pki", "revoke", old_serial)[0] == 1  # already revoked: says so
    assert certs(edge_settings.postgres_dsn)[old_serial] == ("pw-1", "revoked", "keyCompromise")
    assert vpp("pki", "crl", "--out", str(tmp_path / "crl.pem"))[0] == 0
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "old" / "ca.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert [format(r.serial_number, "x") for r in crl] == [old_serial]
