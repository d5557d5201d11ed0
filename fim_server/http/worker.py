"""The front-end's link to the worker: the one WorkerClient, and a worker of its own when none
answers at a local address.

Built from the same pieces as the language server's link (lsp/worker_link.py): the loopback rule
(`wire.addresses.is_loopback`) and the spawner that waits for the worker's `ready ADDRESS` line
(`wire.spawn.spawn_async`). The front-end listens at
once; while its worker loads, requests get 503 "Loading model" (llama.cpp's answer). The worker is
given this process's pid, so that it exits with it; one that dies is started again at the next
request that finds it gone (at most once per RESPAWN_AFTER_S).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fim_server.wire.client import RequestFailed, WorkerClient, WorkerUnavailable
from fim_server.wire.protocol import ErrorCode, ResponseMsg
from fim_server.wire.spawn import SpawnFailed, new_log, spawn_async, spawn_threads, stop_async

from .body import HttpError
from .config import HttpConfig

log = logging.getLogger(__name__)

PROBE_DEADLINE_S = 1.0
RESPAWN_AFTER_S = 30.0


class WorkerLink:
    def __init__(self, config: HttpConfig, on_up: Callable[[], None] = lambda: None):
        self.config = config
        self.client = WorkerClient(config.connect, curve_server_key=config.curve_server_key,
                                   curve_secret_key=config.curve_secret_key)
        self.state = "unknown"                  # up | starting | down | closed
        self.info: dict[str, Any] = {}          # the worker's last stats (model, device, engine, ...)
        self.spawn_log: Optional[str] = None
        self._on_up = on_up
        self._child: Optional[asyncio.subprocess.Process] = None
        self._tasks: list[asyncio.Task] = []
        self._last_spawn = -RESPAWN_AFTER_S

    @property
    def model(self) -> str:
        """The worker's model, as a short name (its directory's)."""
        source = str(self.info.get("model") or "")
        return Path(source.rstrip("/")).name or "fim-server"

    # ---------------------------------------------------------------- public

    async def start(self) -> None:
        """Probe once; start a worker when none answers and that is allowed."""
        if await self.probe():
            return
        if self.config.may_spawn:
            self._spawn_soon()
        else:
            log.warning("no worker answers at %s; requests get 503 until one does", self.config.connect)

    async def probe(self) -> bool:
        """Ask the worker for its stats; True when it answered."""
        try:
            self.info = await self.client.stats(deadline_s=PROBE_DEADLINE_S)
        except (WorkerUnavailable, RequestFailed):
            if self.state not in ("starting", "closed"):
                self.state = "down"
            return False
        self._up()
        return True

    async def infill(self, prefix: str, suffix: str, **kwargs: Any) -> ResponseMsg:
        """The worker's reply. Raises HttpError(503) while its worker loads, WorkerUnavailable
        and RequestFailed as the client does; cancelling the caller cancels the request."""
        if self.state == "starting":
            raise HttpError(503, "Loading model")
        if self.state == "down" and not await self.probe():       # fail fast, not at the deadline
            self._lost()
            raise HttpError(503, f"no worker answers at {self.config.connect}")
        try:
            reply = await self.client.infill(prefix, suffix, **kwargs)
        except WorkerUnavailable:
            self._lost()
            raise
        except RequestFailed as exc:
            if exc.code is ErrorCode.unavailable:
                self._lost()
            raise
        self._up()
        return reply

    async def stats(self) -> Optional[dict[str, Any]]:
        return self.info if await self.probe() else None

    async def close(self) -> None:
        self.state = "closed"
        self.client.close()
        for task in self._tasks:
            task.cancel()
        child, self._child = self._child, None
        if child is not None:
            await stop_async(child)

    # ---------------------------------------------------------------- state

    def _up(self) -> None:
        if self.state in ("up", "closed"):
            return
        self.state = "up"
        self._on_up()

    def _lost(self) -> None:
        if self.state == "closed":
            return
        self.state = "down"
        alive = self._child is not None and self._child.returncode is None
        if self.config.may_spawn and not alive and time.monotonic() - self._last_spawn >= RESPAWN_AFTER_S:
            self._spawn_soon()

    # ---------------------------------------------------------------- a worker of its own

    def _spawn_soon(self) -> None:
        self.state, self._last_spawn = "starting", time.monotonic()
        self._tasks.append(asyncio.ensure_future(self._spawn()))

    async def _spawn(self) -> None:
        c = self.config
        self.spawn_log = new_log()
        log.warning("no worker answers at %s: starting one (log: %s)", c.connect, self.spawn_log)
        try:
            child = await spawn_async(c.connect, self.spawn_log, engine=c.engine, model=c.model,
                                      ar_model=c.ar_model, threads=spawn_threads(c.threads), parent_pid=os.getpid())
        except SpawnFailed as exc:
            log.error("the worker it started did not get ready (%s); see %s", exc.reason, self.spawn_log)
            self.state = "down"
            return
        self._child = child
        self._tasks += [asyncio.ensure_future(child.stdout.read()),       # keep its pipe drained
                        asyncio.ensure_future(self._watch(child))]
        self.state = "down"                     # up once it answers
        await self.probe()

    async def _watch(self, child: asyncio.subprocess.Process) -> None:
        status = await child.wait()
        if child is self._child and self.state != "closed":
            log.warning("the worker it started exited with status %s (log: %s)", status, self.spawn_log)
            self.state = "down"
