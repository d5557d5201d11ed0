"""Transport security: ZeroMQ CURVE set-up, and the check that refuses to bind a non-loopback
address without it (addresses.is_loopback says which are safe). With CURVE the traffic is
encrypted and only the listed client keys get in.
No torch here: the client imports this module too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .addresses import is_loopback


class InsecureBind(ValueError):
    """A non-loopback address was asked for without CURVE keys."""


def check_bind(address: str, secret_key: Optional[str], public_keys: Optional[str]) -> None:
    """Raise InsecureBind (or ValueError for half-given keys) before anything is loaded."""
    if (secret_key is None) != (public_keys is None):
        raise ValueError("--curve-secret-key and --curve-public-keys go together")
    if secret_key is None and not is_loopback(address):
        raise InsecureBind(
            f"refusing to bind {address} without authentication: only loopback TCP "
            f"(127.0.0.1, ::1, localhost) or ipc:// may be used without keys; pass "
            f"--curve-secret-key FILE --curve-public-keys DIR (make them with `fim-server keys`)")


def make_keys(out_dir: str, name: str) -> tuple[str, str]:
    """Write NAME.key (public) and NAME.key_secret into out_dir; returns their paths."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(out_dir, name)
    Path(secret).chmod(0o600)
    return str(public), str(secret)


def _load(path: str, need_secret: bool) -> tuple[bytes, Optional[bytes]]:
    if not Path(path).is_file():
        raise ValueError(f"key file {path} does not exist")
    public, secret = zmq.auth.load_certificate(path)
    if need_secret and not secret:
        raise ValueError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def serve_curve(ctx: zmq.Context, sock: zmq.Socket, secret_key: str, public_keys: str) -> ThreadAuthenticator:
    """Make sock a CURVE server that admits only the client keys in public_keys (a directory
    of *.key files). Call before bind. The authenticator thread must be stopped at exit."""
    if not Path(public_keys).is_dir():
        raise ValueError(f"--curve-public-keys {public_keys} is not a directory")
    if not list(Path(public_keys).glob("*.key")):
        raise ValueError(f"--curve-public-keys {public_keys} holds no *.key files")
    public, secret = _load(secret_key, need_secret=True)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(public_keys))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def client_curve(sock: zmq.Socket, server_key: str, secret_key: str) -> None:
    """Make sock a CURVE client of the server whose public key is in server_key."""
    server_public, _ = _load(server_key, need_secret=False)
    public, secret = _load(secret_key, need_secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
