"""Helpers of the editor end-to-end tests (imported by conftest and the test files)."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER_READY_S = 180          # model load on a busy 2-core CPU
OPT_IN = "FIM_E2E"
# Decoding options for the tests: short answers keep the CPU time per suggestion low.
ENGINE = {"max_tokens": 16}
# (text already in the file, text typed at its end). The bundled model is tiny and being retrained,
# so no test expects one exact suggestion: prompts are tried in turn until one gets a non-empty
# one; what follows is then compared exactly with what the server sent.
PROMPTS = [
    ("def greet(name):\n    print", "("),
    ("import os\n\n\ndef main():\n    path = o", "s"),
    ("for i in range(10):\n    print", "("),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    """Polls predicate() until it returns something truthy; fails the test with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def console_script(name: str) -> str:
    """The venv's own entry point (the one `pip install -e .` made), else PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: pip install -e '.[lsp]'")
    return found


