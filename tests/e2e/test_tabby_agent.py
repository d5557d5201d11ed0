"""tabby-agent (npm, unmodified: `tabby-agent --lsp --stdio`) against `fim-server http` and a real worker.

The agent is configured as its users configure it, in ~/.tabby-client/agent/config.toml (HOME is a
temporary directory), `[server] endpoint` pointing at the front-end. A small LSP client here opens
a Python document and asks for a completion at its end: the agent checks the server's
/v1/health, posts its Tabby completion request (`segments`) to /v1/completions and answers an
item whose edit inserts the suggestion. Install: `npm install --prefix ~/.cache/fim-e2e/tabby
tabby-agent` (or set TABBY_AGENT to its cli.js).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .http_front import http_server, http_stats  # noqa: F401  (a fixture)
from .support import PROMPTS

pytestmark = pytest.mark.e2e

AGENT = Path(os.environ.get("TABBY_AGENT", Path.home() / ".cache/fim-e2e/tabby/node_modules/.bin/tabby-agent"))
ANSWER_WAIT_S = 90


class LspClient:
    """JSON-RPC over the agent's stdio (Content-Length framing); server requests get `null`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "wb"),
                                     env=env)
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while (line := out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if not line or length is None:
                self.messages.put(None)
                return
            self.messages.put(json.loads(out.read(length)))

    def _send(self, message: dict) -> None:
        data = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: dict, timeout: float = ANSWER_WAIT_S):
        self.next_id += 1
        self._send({"id": self.next_id, "method": method, "params": params})
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                message = self.messages.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if message is None:
                pytest.fail("tabby-agent exited")
            if "method" in message and "id" in message:          # window/workDoneProgress/create, ...
                self._send({"id": message["id"], "result": None})
            elif message.get("id") == self.next_id and "method" not in message:
                assert "error" not in message, message
                return message["result"]
        pytest.fail(f"no answer to {method} within {timeout:.0f} s")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=15)


def ask_until_answered(client: LspClient, base: str, uri: str, position: dict) -> list[dict]:
    """The non-empty items the agent gives; [] once fim-server http answered and the agent still
    had nothing to show (the agent answers nothing until its health check passed: asked again)."""
    answered = http_stats(base)["http"]["answered"]
    end = time.monotonic() + ANSWER_WAIT_S
    while time.monotonic() < end:
        result = client.request("textDocument/completion", {"textDocument": {"uri": uri}, "position": position})
        items = [i for i in result["items"] if i["textEdit"]["newText"].strip()]
        if items or http_stats(base)["http"]["answered"] > answered:
            return items
        time.sleep(0.5)
    pytest.fail(f"fim-server http got no completion request from the agent in {ANSWER_WAIT_S} s")


def test_tabby_agent_completes_from_fim_server_http(http_server, tmp_path):
    if not AGENT.exists() or not shutil.which("node"):
        pytest.skip(f"tabby-agent not found at {AGENT}: npm install --prefix ~/.cache/fim-e2e/tabby tabby-agent")
    home = tmp_path / "home"
    (home / ".tabby-client" / "agent").mkdir(parents=True)
    (home / ".tabby-client" / "agent" / "config.toml").write_text(
        f'[server]\nendpoint = "{http_server}"\n\n[anonymousUsageTracking]\ndisable = true\n')
    client = LspClient([str(AGENT), "--lsp", "--stdio"], {**os.environ, "HOME": str(home)}, tmp_path / "agent.log")
    try:
        init = client.request("initialize", {"processId": os.getpid(), "rootUri": None,
                                             "capabilities": {"textDocument": {"completion": {}}}})
        assert "completionProvider" in init["capabilities"]
        client.notify("initialized", {})
        before = http_stats(http_server)["http"]["answered"]
        for version, (prefix, typed) in enumerate(PROMPTS, start=1):
            text = prefix + typed
            uri = (tmp_path / f"example{version}.py").as_uri()
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                    "version": 1, "text": text}})
            lines = text.split("\n")
            position = {"line": len(lines) - 1, "character": len(lines[-1])}
            items = ask_until_answered(client, http_server, uri, position)
            if items:
                break
        else:
            pytest.fail(f"no prompt got a non-empty completion: {PROMPTS}")
    finally:
        client.close()
    item = items[0]
    assert item["textEdit"]["range"]["end"] == position
    assert item["data"]["completionId"].startswith("cmpl-")            # the id fim-server http gave it
    assert http_stats(http_server)["http"]["answered"] > before
