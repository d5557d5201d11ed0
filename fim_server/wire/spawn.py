"""Start `fim-server serve` as a child process and wait for it to say `ready ADDRESS`.

A worker prints exactly one line on stdout, `ready <endpoint>`, once its model is loaded and
warm; everything else goes to its log (stderr). That line is the readiness signal every
spawner waits for: the language server (asyncio), the benches and the tests (blocking).
No torch here.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

READY = "ready "
READY_TIMEOUT_S = 180.0                       # model load and warm-up
MODULE_COMMAND = (sys.executable, "-m", "fim_server.cli")


def serve_command(address: str, *, engine: Optional[str] = None, model: Optional[str] = None,
                  ar_model: Optional[str] = None, threads: int = 0, parent_pid: Optional[int] = None,
                  idle_exit_s: float = 0, extra: Sequence[str] = (),
                  program: Sequence[str] = MODULE_COMMAND) -> list[str]:
    """The command line of a worker on `address` (the AR verifier only for speculative). A
    spawner passes its own pid as `parent_pid`, so that the worker does not outlive it."""
    cmd = [*program, "serve", "--bind", address]
    if engine:
        cmd += ["--engine", engine]
    if model:
        cmd += ["--model", model]
    if ar_model and engine == "speculative":
        cmd += ["--ar-model", ar_model]
    if threads:
        cmd += ["--threads", str(threads)]
    if parent_pid:
        cmd += ["--parent-pid", str(parent_pid)]
    if idle_exit_s:
        cmd += ["--idle-exit", f"{idle_exit_s:g}"]
    return [*cmd, *extra]


def spawn_threads(setting: int) -> int:
    """Torch threads of a worker a front-end (LSP or HTTP) starts: the setting, or for 0 half the
    CPUs this process may use, at least one. The worker shares the machine with the editor: torch's
    own default (every core) makes each op wait for a core someone else holds. The bundled model
    on 2 cores shared with other work: 1.4x slower per forward through the worker with 2 threads
    than with 1, and several times slower in one process (bench/latency_breakdown.py, README)."""
    if setting:
        return setting
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // 2)


def child_env(threads: int = 0) -> dict[str, str]:
    """The environment of a spawned worker: OpenMP gets the same thread count as torch."""
    return {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}


def ready_address(line: str | bytes) -> Optional[str]:
    """The endpoint of a `ready ADDRESS` line, None for any other line."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text[len(READY):].strip() if text.startswith(READY) else None


async def wait_ready_async(stdout: asyncio.StreamReader) -> Optional[str]:
    """The endpoint once the worker says it is ready; None if its stdout closes first."""
    while True:
        line = await stdout.readline()
        if not line:
            return None
        address = ready_address(line)
        if address is not None:
            return address


class SpawnFailed(Exception):
    """A spawned worker could not start or did not get ready; `reason` is one line for the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def new_log() -> str:
    """A fresh file for a spawned worker's log (its stderr)."""
    fd, path = tempfile.mkstemp(prefix="fim-worker-", suffix=".log")
    os.close(fd)
    return path


def log_tail(path: str) -> str:
    """The last line of a spawned worker's log: what it said before it gave up."""
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1][:300] if lines else "it exited before it was ready"


async def spawn_async(address: str, log_path: str, *, timeout: float = READY_TIMEOUT_S,
                      **command) -> asyncio.subprocess.Process:
    """Start a worker on a local `address` (serve_command's keywords), its stderr to `log_path`,
    and return it once it says `ready`; its stdout is left for the caller to drain. Raises
    SpawnFailed (the worker stopped) when it cannot start or stays silent for `timeout` s."""
    if address.startswith("ipc://"):
        Path(address[len("ipc://"):]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_path, "ab") as log:
        try:
            child = await asyncio.create_subprocess_exec(
                *serve_command(address, **command), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log, env=child_env(command.get("threads", 0)))
        except OSError as exc:
            raise SpawnFailed(str(exc)) from None
    try:
        ready = await asyncio.wait_for(wait_ready_async(child.stdout), timeout)
    except asyncio.TimeoutError:
        ready = None
    if ready is None:
        await stop_async(child)
        raise SpawnFailed(log_tail(log_path))
    return child


async def stop_async(child: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM a spawned worker (it drains and exits) and wait; SIGKILL past `timeout`."""
    if child.returncode is not None:
        return
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), timeout)
    except asyncio.TimeoutError:
        child.kill()
        await child.wait()


def wait_ready(proc: subprocess.Popen, log: Path, timeout: float = READY_TIMEOUT_S) -> str:
    """The endpoint from the worker's ready line (stdout in text mode); the worker is killed and
    its log raised when it exits or stays silent for `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            address = ready_address(line)
            if address is not None:
                return address
            if not line and proc.poll() is not None:
                break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the worker did not get ready; its log:\n{log.read_text()[-3000:]}")


class SpawnedWorker:
    """A blocking spawner: starts the worker, returns once it is ready; `stop` ends it. The
    worker exits by itself when this process is gone (a killed bench or test run)."""

    def __init__(self, address: str, log_path: Path, *, timeout: float = READY_TIMEOUT_S, **command):
        threads = command.get("threads", 0)
        command.setdefault("parent_pid", os.getpid())
        self.log_path = Path(log_path)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(serve_command(address, **command), stdout=subprocess.PIPE,
                                         stderr=log, text=True, env=child_env(threads))
        self.address = wait_ready(self.proc, self.log_path, timeout)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the worker and wait for it; killed (and TimeoutExpired raised) past `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
