"""Start a worker process for a benchmark and stop it afterwards."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

READY_TIMEOUT_S = 180


@contextlib.contextmanager
def worker(engine: str = "diffusion", model: Optional[str] = None, threads: int = 0,
           extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the address of a fresh `fim-server serve` on an ipc:// path; its log goes to a temp file."""
    tmp = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    cmd = [sys.executable, "-m", "fim_server.cli", "serve", "--engine", engine, "--bind", f"ipc://{tmp}/w.sock",
           "--threads", str(threads), *(["--model", model] if model else []), *extra]
    log = open(tmp / "worker.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    try:
        yield wait_ready(proc, tmp / "worker.log")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def wait_ready(proc: subprocess.Popen, log: Path, timeout: float = READY_TIMEOUT_S) -> str:
    """The address from the worker's `ready ADDR` line on its stdout (text mode); the worker is
    killed and its log raised when it exits or stays silent for `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("ready "):
                return line.split(" ", 1)[1].strip()
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise RuntimeError(f"the worker did not get ready; its log:\n{log.read_text()[-3000:]}")
