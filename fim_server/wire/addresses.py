"""Worker addresses: the default one, and which ones are safe without authentication.

The worker executes requests from anyone who can reach its socket, so it listens
unauthenticated only on loopback TCP or an ipc:// path (guarded by file permissions).
No zmq or torch here: the language server imports this module.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"     # where `fim-server serve` binds and clients connect by default


def tcp_host(address: str) -> Optional[str]:
    """The host part of tcp://HOST:PORT (brackets of [v6] removed), None for other transports."""
    if not address.startswith("tcp://"):
        return None
    host = address[len("tcp://"):].rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(address: str) -> bool:
    """True for ipc:// and inproc:// and for TCP on 127.0.0.0/8, ::1 or localhost."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = tcp_host(address)
    if host is None:
        return False                     # pgm, udp, ...: never without keys
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                     # "*", an interface name or a host name
