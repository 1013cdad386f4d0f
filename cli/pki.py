"""`vpp pki init | issue | rotate | revoke | list | crl`: the platform CA and the devices' certificates.

The CA key stays in the PKI directory (``<state_dir>/pki``, mode 0600 files); ``issue`` writes a
device's ``device.pem``, ``device.key`` and ``ca.pem`` to ``--out`` (``--all``: one sub-directory per
registered device). Every certificate is recorded in ``device_certificates``.

``issue`` for a device that already holds an active certificate behaves as ``rotate`` (the operator
re-provisions a box; the old certificate keeps working until the new one is first used); ``rotate``
refuses a device with no active certificate (nothing to rotate: ``issue`` it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from cli.common import command, load_settings, positive_int

__all__ = ["add_commands"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _connect(settings):
    import psycopg

    from vpp.db import migrate

    migrate(settings.postgres_dsn)
    return psycopg.connect(settings.postgres_dsn, autocommit=False)


def cmd_init(args: argparse.Namespace) -> int:
    from edge import pki

    settings = load_settings(args)
    paths = pki.PkiPaths.of(settings)
    if paths.ca_key.exists():
        ca_key, ca_cert = pki.load_ca(paths)
        print(f"platform CA kept: {paths.ca_cert} (serial {pki.serial_hex(ca_cert)})")
    else:
        ca_key, ca_cert = pki.make_ca(_now())
        pki.write_secret(paths.ca_key, pki.key_pem(ca_key))
        pki.write_secret(paths.ca_cert, pki.cert_pem(ca_cert))
        print(f"platform CA created: {paths.ca_cert} (EC P-256, {pki.CA_DAYS} days)")
    key, cert = pki.make_server_cert(ca_key, ca_cert, _now(), extra_sans=args.san or ())
    pki.write_secret(paths.server_key, pki.key_pem(key))
    pki.write_secret(paths.server_cert, pki.cert_pem(cert))
    print(f"gateway server certificate: {paths.server_cert} (SAN localhost, 127.0.0.1{''.join(', ' + s for s in args.san or ())})")
    return 0


def _write_device(out: Path, issued, ca_cert) -> None:
    from edge import pki

    pki.write_secret(out / "device.key", pki.key_pem(issued.key))
    pki.write_secret(out / "device.pem", pki.cert_pem(issued.cert))
    pki.write_secret(out / "ca.pem", pki.cert_pem(ca_cert))


def _issue(settings, device_ids: list[str], out_dirs: list[Path], days: int, *, rotate: bool) -> int:
    from edge import pki
    from sinks import certificates
    from vpp.errors import UserError

    ca_key, ca_cert = pki.load_ca(pki.PkiPaths.of(settings))
    with _connect(settings) as conn:
        missing = sorted(set(device_ids) - certificates.registered_devices(conn, device_ids))
        if missing:
            raise UserError(f"not in the asset registry: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                            "(vpp assets import FILE.csv registers devices)")
        if rotate:
            without = sorted(set(device_ids) - certificates.active_devices(conn))
            if without:
                raise UserError(f"{', '.join(without)} has no active certificate to rotate (vpp pki issue gives it one)")
        now = _now()
        issued = [pki.make_device_cert(ca_key, ca_cert, d, now, days=days) for d in device_ids]
        certificates.insert_certificates(conn, [i.row() for i in issued])
        for one, out in zip(issued, out_dirs):
            _write_device(out, one, ca_cert)
        conn.commit()  # files first: a row without files is a certificate nobody holds, harmless
    return len(issued)


def cmd_issue(args: argparse.Namespace) -> int:
    from vpp.errors import UserError

    settings = load_settings(args)
    out = Path(args.out)
    if args.all:
        if args.device_id:
            raise UserError("give a DEVICE_ID or --all, not both")
        import psycopg

        from sinks import certificates

        with psycopg.connect(settings.postgres_dsn) as conn:
            devices = sorted(certificates.registered_devices(conn))
        if not devices:
            raise UserError("the asset registry is empty (vpp assets import FILE.csv, or vpp simulate, registers devices)")
        n = _issue(settings, devices, [out / d for d in devices], args.days, rotate=False)
        print(f"issued {n} device certificates under {out}/<device_id>/ (valid {args.days} days)")
        return 0
    if not args.device_id:
        raise UserError("give a DEVICE_ID, or --all for every registered device")
    _issue(settings, [args.device_id], [out], args.days, rotate=False)
    print(f"issued a certificate for {args.device_id}: {out}/device.pem, device.key, ca.pem (valid {args.days} days)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    _issue(settings, [args.device_id], [Path(args.out)], args.days, rotate=True)
    print(f"new certificate for {args.device_id} in {args.out}; the old one works until the device first connects with it")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from sinks import certificates
    from vpp.errors import UserError

    settings = load_settings(args)
    with _connect(settings) as conn:
        rows = certificates.revoke(conn, args.target, args.reason)
        conn.commit()
    if not rows:
        raise UserError(f"no unrevoked certificate has serial or device {args.target!r} (vpp pki list shows them)")
    for r in rows:
        print(f"revoked {r.serial} ({r.device_id})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from sinks import certificates

    settings = load_settings(args)
    with _connect(settings) as conn:
        rows = certificates.list_certificates(conn, args.device)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return 0
    for r in rows:
        print(f"{r.serial:>40}  {r.device_id:<20} {r.status:<10} {r.not_after:%Y-%m-%d}  {r.reason or ''}")
    if not rows:
        print("no certificates", file=sys.stderr)
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from edge import pki
    from sinks import certificates

    settings = load_settings(args)
    ca_key, ca_cert = pki.load_ca(pki.PkiPaths.of(settings))
    with _connect(settings) as conn:
        revoked = certificates.revoked_serials(conn)
    crl = pki.build_crl(ca_key, ca_cert, revoked, _now())
    pki.write_secret(Path(args.out), crl.public_bytes(serialization.Encoding.PEM))
    print(f"CRL with {len(revoked)} revoked certificate(s): {args.out}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("pki", help="the platform CA and device certificates (init, issue, rotate, revoke, list, crl)")
    pki_sub = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    q = command(pki_sub, "init", cmd_init, help="create the platform CA (kept if present) and the gateway's server certificate")
    q.add_argument("--san", action="append", help="another DNS name or IP of the gateway (repeatable)")
    q = command(pki_sub, "issue", cmd_issue, help="a client certificate for a registered device (or --all of them)")
    q.add_argument("device_id", nargs="?", metavar="DEVICE_ID")
    q.add_argument("--all", action="store_true", help="every device of the asset registry, into OUT/<device_id>/")
    q.add_argument("--out", required=True, help="directory for device.pem, device.key and ca.pem")
    q.add_argument("--days", type=positive_int, default=365, help="validity in days (default 365)")
    q = command(pki_sub, "rotate", cmd_rotate, help="a new certificate; the old one is superseded when the new one is first used")
    q.add_argument("device_id", metavar="DEVICE_ID")
    q.add_argument("--out", required=True)
    q.add_argument("--days", type=positive_int, default=365)
    q = command(pki_sub, "revoke", cmd_revoke, help="revoke a certificate (by serial) or all of a device's")
    q.add_argument("target", metavar="SERIAL_OR_DEVICE_ID")
    q.add_argument("--reason", default=None)
    q = command(pki_sub, "list", cmd_list, help="certificates and their status")
    q.add_argument("--device", default=None)
    q.add_argument("--json", action="store_true")
    q = command(pki_sub, "crl", cmd_crl, help="write an X.509 CRL (PEM) of the revoked certificates, signed by the CA")
    q.add_argument("--out", required=True)
