"""`fim-server http` for the end-to-end tests of editor plugins that speak HTTP (llama.vim, tabby-agent)."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from .support import console_script, free_port, wait_for


@pytest.fixture(scope="module")
def http_server(worker, tmp_path_factory):
    """`fim-server http` in front of the session's worker, on a free port. llama.vim asks for a
    250 ms first answer; a cold worker on this CPU needs longer, so the floor is raised."""
    log = tmp_path_factory.mktemp("http") / "http.log"
    base = f"http://127.0.0.1:{free_port()}"
    with open(log, "w") as out:
        proc = subprocess.Popen([console_script("fim-server"), "http", "--port", base.rpartition(":")[2],
                                 "--connect", worker, "--no-spawn", "--min-deadline-ms", "60000"],
                                stdout=out, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"fim-server http exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 60, f"fim-server http at {base}", interval_s=0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/fim/stats", timeout=10) as r:
        return json.loads(r.read())


