"""Shared pieces of the editor end-to-end tests: opt-in switch, a real worker, the real fim-lsp.

These tests start real editors (Neovim, code-server in Chromium), the real `fim-lsp` and a real
worker on the bundled model. They run in the `.ci/e2e` stage (which installs the editors and
sets FIM_E2E=1); the main suite skips them, so it stays fast without any editor installed.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from .support import OPT_IN, WORKER_READY_S, console_script, free_port, wait_for


def pytest_collection_modifyitems(config, items):
    if os.environ.get(OPT_IN):
        return
    skip = pytest.mark.skip(reason=f"editor end-to-end test: runs in the .ci/e2e stage ({OPT_IN}=1)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fim_lsp() -> str:
    return console_script("fim-lsp")


@pytest.fixture(scope="session")
def worker(tmp_path_factory):
    """A real `fim-server serve` on the bundled diffusion model, one torch thread, loopback."""
    from fim_server.wire.client import RequestFailed, SyncWorkerClient, WorkerUnavailable

    address = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([console_script("fim-server"), "serve", "--threads", "1", "--bind", address],
                                stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with SyncWorkerClient(address) as client:
            try:
                client.stats(deadline_s=1.0)
                return True
            except (RequestFailed, WorkerUnavailable):
                return False

    try:
        wait_for(ready, WORKER_READY_S, f"the worker at {address}", interval_s=1.0)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
