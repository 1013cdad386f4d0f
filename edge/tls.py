"""The gateway's TLS: one server context requiring a client certificate of the platform CA, small read buffers,
and every handshake OpenSSL refuses counted by reason.

OpenSSL refuses no certificate, another CA's and an expired one during the TLS handshake, before any
HTTP: neither asyncio nor websockets sees such a connection (asyncio logs the failure only in debug
mode). The context's ``sslobject_class`` (the documented way to customise what ``wrap_bio`` returns,
which asyncio's TLS transport uses) is a subclass whose ``do_handshake`` reports the refusal to
``on_refused(reason, detail)`` and re-raises it unchanged. A connection that closes before its first
TLS message (a load balancer's TCP probe) is no handshake and is not counted.
"""

from __future__ import annotations

import ssl
from typing import Callable

from edge.pki import PkiPaths
from edge.protocol import tls_refusal_reason

__all__ = ["server_ssl_context", "small_tls_read_buffers", "TLS_READ_CHUNK"]

#: asyncio's TLS transport allocates (and zeroes: resident) a read buffer of ``SSLProtocol.max_size``,
#: 256 KiB, per connection: 70 % of what an idle device's session costs. Decrypted data is read in
#: chunks of this size, so 32 KiB (two TLS records) costs nothing but a few more reads of a large frame.
#: Measured with bench/gateway.py: 365 -> 145 KiB per idle connection.
TLS_READ_CHUNK = 32 * 1024


def small_tls_read_buffers() -> None:
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_CHUNK


def server_ssl_context(paths: PkiPaths, on_refused: Callable[[str, str], None] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(paths.server_cert, paths.server_key)
    ctx.load_verify_locations(cafile=str(paths.ca_cert))
    if on_refused is not None:
        ctx.sslobject_class = _counting_sslobject(on_refused)
    return ctx


def _counting_sslobject(on_refused: Callable[[str, str], None]) -> type[ssl.SSLObject]:
    class CountingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake goes on when more bytes come
            except ssl.SSLError as exc:
                on_refused(tls_refusal_reason(exc), str(exc))
                raise

    return CountingSSLObject
