"""The server's connection to the worker: requests, outages, and a worker of its own.

States: "unknown" (not probed yet), "up", "starting" (a worker this server spawned is
loading), "idle" (the worker this server spawned left after SPAWNED_IDLE_EXIT_S without
requests; the next completion starts another), "down", "closed" (the server is shutting
down). While down, starting or idle,
completions return at once with nothing instead of waiting for a deadline on every
keystroke. A background probe (`health`, with backoff) notices when a worker answers
again. The user is told once per outage, by `tell_user` (window/showMessage); everything
else goes to `log` (window/logMessage).

When no worker answers, the address is local (ipc:// or loopback tcp) and `spawnWorker` is
on, the server starts `fim-server serve` on that address (bundled model unless
`worker.model`), waits for its `ready` line, and stops it at shutdown. The worker is given
this server's pid, so that it exits when the server is killed (an editor crash), and an idle
timeout, so that an unused one gives its memory back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from typing import Any, Callable, Optional

from fim_server.wire.addresses import is_loopback
from fim_server.wire.client import RequestFailed, WorkerClient, WorkerUnavailable
from fim_server.wire.protocol import ErrorCode, ResponseMsg
from fim_server.wire.spawn import SpawnFailed, new_log, serve_command, spawn_async, spawn_threads, stop_async

from .settings import Settings

log = logging.getLogger(__name__)

PROBE_DEADLINE_S = 1.0
PROBE_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)      # waits between probes while down; the last repeats
RESPAWN_AFTER_S = 30.0                        # at most one spawn attempt per this interval
SPAWNED_IDLE_EXIT_S = 30 * 60                 # a spawned worker unused this long exits (and frees ~400 MB)


class WorkerLink:
    def __init__(self, settings: Settings, tell_user: Callable[[str], None], log_message: Callable[[str], None]):
        self.settings = settings
        self._tell_user = tell_user
        self._log = log_message
        self._client = WorkerClient(settings.worker_address)
        self.state = "unknown"
        self._reported = False                      # the user was told about this outage
        self._recovery: Optional[asyncio.Task] = None
        self._child: Optional[asyncio.subprocess.Process] = None
        self._child_tasks: list[asyncio.Task] = []
        self._child_log: Optional[str] = None
        self._last_spawn = -RESPAWN_AFTER_S
        self._started = False                       # start() ran: address changes probe at once
        self._start_task: Optional[asyncio.Task] = None

    # ---------------------------------------------------------------- public

    async def start(self) -> None:
        """Probe once (called at `initialized` and after the address changed)."""
        self._started = True
        if await self._probe():
            self._up()
        else:
            self._down(f"nothing answered within {PROBE_DEADLINE_S:g} s")

    def configure(self, settings: Settings) -> None:
        old, self.settings = self.settings, settings
        if settings.worker_address == old.worker_address:
            return
        self._client.close()
        self._client = WorkerClient(settings.worker_address)
        self._cancel_recovery()
        self.state, self._reported = "unknown", False
        if self._started:
            self._start_task = asyncio.ensure_future(self.start())

    async def infill(self, prefix: str, suffix: str, doc_key: str, single_line: bool,
                     options: dict[str, Any], max_tokens: Optional[int]) -> Optional[ResponseMsg]:
        """The worker's reply, or None when no worker is there (the user was told).
        Raises RequestFailed for other worker errors; cancelling the caller cancels the request."""
        if self.state == "idle":                      # the spawned worker left when unused: start another
            self._down("the worker it started exited when idle")
            return None
        if self.state in ("down", "starting", "closed"):
            return None
        try:
            reply = await self._client.infill(
                prefix, suffix, doc_key=doc_key, options=options, max_tokens=max_tokens,
                single_line=single_line, deadline_s=self.settings.worker_timeout_ms / 1000)
        except WorkerUnavailable as exc:
            self._down(str(exc))
            return None
        except RequestFailed as exc:
            if exc.code is ErrorCode.unavailable:       # it is shutting down
                self._down(exc.message)
                return None
            raise
        self._up()
        return reply

    async def close_document(self, doc_key: str) -> None:
        """Stop the document's requests and free what the worker cached for it."""
        if self.state != "up":
            return
        try:
            await self._client.close_document(doc_key)
        except Exception as exc:                        # best effort: the request ends anyway
            log.debug("close of %s not sent: %s", doc_key, exc)

    async def stats(self) -> Optional[dict[str, Any]]:
        try:
            return await self._client.stats(deadline_s=PROBE_DEADLINE_S)
        except (WorkerUnavailable, RequestFailed):
            return None

    def status(self) -> dict[str, Any]:
        child = self._child
        return {"address": self.settings.worker_address, "state": self.state,
                "spawned_pid": child.pid if child and child.returncode is None else None,
                "spawn_log": self._child_log}

    async def close(self) -> None:
        self.state = "closed"                       # what fails from here on is not an outage
        self._cancel_recovery()
        self._client.close()
        await self._stop_child()

    def kill_child_now(self) -> None:
        """Synchronous last resort at process exit: SIGTERM the spawned worker."""
        child = self._child
        if child is not None and child.returncode is None:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ---------------------------------------------------------------- state changes

    def _up(self) -> None:
        if self.state == "closed":
            return
        if self.state in ("down", "starting"):
            self._log(f"fim: the completion worker at {self.settings.worker_address} answers again")
        self.state, self._reported = "up", False

    def _down(self, reason: str) -> None:
        if self.state in ("down", "starting", "closed"):
            return
        self.state = "down"
        log.warning("worker at %s unavailable: %s", self.settings.worker_address, reason)
        self._cancel_recovery()
        self._recovery = asyncio.ensure_future(self._recover(reason))

    def _report(self, reason: str) -> None:
        if self._reported:
            return
        self._reported = True
        address = self.settings.worker_address
        hint = "" if self.settings.spawn_worker and is_loopback(address) else \
            f" Start one with `fim-server serve --bind {address}`."
        self._tell_user(f"fim: no completion worker answers at {address} ({reason}). "
                        f"Completions are paused and resume by themselves when it is back.{hint}")

    def _cancel_recovery(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
        self._recovery = None

    async def _recover(self, reason: str) -> None:
        """Until a worker answers: spawn one when allowed, tell the user once, probe."""
        for attempt in itertools.count():
            if self._may_spawn():
                spawned, why = await self._spawn()
                if spawned:
                    self._up()
                    return
                self.state, reason = "down", f"could not start one: {why}"
            self._report(reason)
            await asyncio.sleep(PROBE_BACKOFF_S[min(attempt, len(PROBE_BACKOFF_S) - 1)])
            if await self._probe():
                self._up()
                return

    async def _probe(self) -> bool:
        return await self.stats() is not None

    # ---------------------------------------------------------------- spawned worker

    def _may_spawn(self) -> bool:
        alive = self._child is not None and self._child.returncode is None
        recent = time.monotonic() - self._last_spawn < RESPAWN_AFTER_S
        return (self.settings.spawn_worker and is_loopback(self.settings.worker_address)
                and not alive and not recent)

    def _spawn_options(self) -> dict[str, Any]:
        """serve_command's keywords for the worker this server starts."""
        s = self.settings
        return dict(engine=s.engine_kind, model=s.worker_model, ar_model=s.worker_ar_model,
                    threads=spawn_threads(s.worker_threads), parent_pid=os.getpid(),
                    idle_exit_s=SPAWNED_IDLE_EXIT_S)

    def _command(self) -> list[str]:
        return serve_command(self.settings.worker_address, **self._spawn_options())

    async def _spawn(self) -> tuple[bool, str]:
        """Start a worker and wait for its ready line: (ready, reason when not)."""
        self.state, self._last_spawn = "starting", time.monotonic()
        address = self.settings.worker_address
        self._child_log = new_log()
        self._log(f"fim: starting a completion worker at {address} (log: {self._child_log})")
        try:
            self._child = await spawn_async(address, self._child_log, **self._spawn_options())
        except SpawnFailed as exc:
            return False, exc.reason
        self._child_tasks = [asyncio.ensure_future(self._child.stdout.read()),   # keep the pipe drained
                             asyncio.ensure_future(self._watch_child(self._child))]
        return True, ""

    async def _watch_child(self, child: asyncio.subprocess.Process) -> None:
        status = await child.wait()
        if child is not self._child:
            return
        if status == 0 and self.state == "up":
            # a clean exit (its idle timeout, or a SIGTERM) while nothing was asked of it:
            # restarting it now would undo the idle exit; the next completion does
            self.state = "idle"
            self._log("fim: the completion worker it started has exited (idle); the next completion starts another")
            return
        self._down(f"the worker it started exited with status {status}")

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        for task in self._child_tasks:
            task.cancel()
        self._child_tasks = []
        if child is not None:
            await stop_async(child)
