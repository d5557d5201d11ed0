"""Start a worker process for a benchmark and stop it afterwards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from fim_server.wire.spawn import SpawnedWorker


@contextlib.contextmanager
def worker(engine: str = "diffusion", model: Optional[str] = None, threads: int = 0,
           extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the address of a fresh `fim-server serve` on an ipc:// path; its log goes to a temp file."""
    tmp = Path(tempfile.mkdtemp(prefix="fim-bench-"))
    try:
        spawned = SpawnedWorker(f"ipc://{tmp}/w.sock", tmp / "worker.log", engine=engine, model=model,
                                threads=threads, extra=extra)
        try:
            yield spawned.address
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
