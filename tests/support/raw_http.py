"""Raw HTTP/1.1 over a socket, for tests of what a server does with malformed or unusual requests."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def send_until_closed(url: str, request: bytes) -> bytes:
    """Send ``request`` as-is to ``url``'s host and port; everything the server sent until it closed."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received
