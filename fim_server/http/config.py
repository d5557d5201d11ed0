"""The HTTP front-end's configuration: one frozen dataclass, its flags, and the bind rule.

A front-end bound to anything but loopback must be given an API key (`--api-key`, or the
environment variable FIM_API_KEY so that it stays out of the process list); every request
must then carry it (`Authorization: Bearer KEY` or `x-api-key: KEY`) except the health probes.
No aiohttp or torch here: the `fim-server` parser imports this module.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Optional

from fim_server.wire.addresses import DEFAULT_ADDRESS, is_loopback
from fim_server.wire.options import ENGINES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8012             # llama.vim's and llama.vscode's default endpoint
API_KEY_ENV = "FIM_API_KEY"


class ConfigError(ValueError):
    """A configuration the front-end refuses to start with."""


@dataclass(frozen=True)
class HttpConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT                  # 0: any free port (the `listening` line names it)
    connect: str = DEFAULT_ADDRESS            # the worker's address
    api_key: Optional[str] = None             # required for a non-loopback host
    spawn: bool = True                        # start a worker when none answers at a local address
    engine: Optional[str] = None              # of a worker it starts (None: the worker's default)
    model: Optional[str] = None               # of a worker it starts (None: the bundled model)
    ar_model: Optional[str] = None            # speculative verifier of a worker it starts
    threads: int = 0                          # torch threads of a worker it starts (0: half the CPUs)
    curve_server_key: Optional[str] = None    # a CURVE worker: its public key file ...
    curve_secret_key: Optional[str] = None    # ... and this client's secret key file
    max_body_bytes: int = 8 * 1024 * 1024     # larger bodies get 413
    max_tokens: int = 128                     # a request asking for more middle tokens gets this many
    default_max_tokens: int = 64              # when a request names none (Tabby, llm-ls); at most max_tokens
    timeout_s: float = 10.0                   # deadline of a request that sets none
    min_deadline_ms: float = 2000.0           # llama.cpp's t_max_predict_ms is raised to at least this
    max_extra_chars: int = 16_000             # extra context (input_extra, Tabby snippets) kept, newest first
    max_choices: int = 8                      # n / n_cmpl at most

    def check(self) -> None:
        """Raise ConfigError for a configuration that must not start."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535; got {self.port}")
        if not self.loopback and not self.api_key:
            raise ConfigError(f"refusing to listen on {self.host} (not loopback) without an API key: "
                              f"give --api-key or set {API_KEY_ENV}; clients then send "
                              f"'Authorization: Bearer KEY'")
        if (self.curve_server_key is None) != (self.curve_secret_key is None):
            raise ConfigError("--curve-server-key and --curve-secret-key go together")
        for name in ("max_tokens", "default_max_tokens", "max_choices", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.timeout_s <= 0 or self.min_deadline_ms < 0 or self.max_extra_chars < 0:
            raise ConfigError("--timeout must be positive; --min-deadline-ms and --max-extra-chars not negative")

    @property
    def loopback(self) -> bool:
        """The wire's loopback rule, applied to the HTTP host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return is_loopback(f"tcp://{host}:{self.port}")

    @property
    def may_spawn(self) -> bool:
        return self.spawn and is_loopback(self.connect)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = HttpConfig()
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host}; "
                                                  "anything but loopback needs an API key)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port}, llama.vim's; 0: any free one)")
    p.add_argument("--connect", default=d.connect, metavar="ADDR",
                   help=f"the worker's address (default {d.connect}); a local one gets a worker of its own "
                        "when none answers")
    p.add_argument("--no-spawn", dest="spawn", action="store_false", help="never start a worker")
    p.add_argument("--api-key", default=None,
                   help=f"required bearer token (default: ${API_KEY_ENV}; required off loopback)")
    p.add_argument("--engine", choices=ENGINES, default=None, help="engine of a worker it starts")
    p.add_argument("--model", default=None, help="model of a worker it starts (default: the bundled model)")
    p.add_argument("--ar-model", default=None, help="speculative verifier of a worker it starts")
    p.add_argument("--threads", type=int, default=0, help="torch threads of a worker it starts (0: half the CPUs)")
    p.add_argument("--curve-server-key", default=None, metavar="FILE", help="a CURVE worker's public .key file")
    p.add_argument("--curve-secret-key", default=None, metavar="FILE", help="this client's .key_secret file")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help=f"middle tokens at most; larger requests are cut to it (default {d.max_tokens})")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens,
                   help=f"middle tokens when a request names none (default {d.default_max_tokens})")
    p.add_argument("--timeout", type=float, default=d.timeout_s, dest="timeout_s",
                   help=f"seconds a request may take when it sets no deadline (default {d.timeout_s:g})")
    p.add_argument("--min-deadline-ms", type=float, default=d.min_deadline_ms,
                   help="floor of llama.cpp's t_max_predict_ms deadline: a diffusion middle comes whole or "
                        f"not at all (default {d.min_deadline_ms:g})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger bodies get 413")
    p.add_argument("--max-extra-chars", type=int, default=d.max_extra_chars,
                   help="extra context chunks kept, newest first (default %(default)s)")


def from_arguments(args: argparse.Namespace) -> HttpConfig:
    """The configuration of parsed flags; raises ConfigError."""
    config = HttpConfig(
        host=args.host, port=args.port, connect=args.connect,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, spawn=args.spawn,
        engine=args.engine, model=args.model, ar_model=args.ar_model, threads=args.threads,
        curve_server_key=args.curve_server_key, curve_secret_key=args.curve_secret_key,
        max_body_bytes=args.max_body_bytes, max_tokens=args.max_tokens,
        default_max_tokens=args.default_max_tokens, timeout_s=args.timeout_s,
        min_deadline_ms=args.min_deadline_ms, max_extra_chars=args.max_extra_chars)
    config.check()
    return config
