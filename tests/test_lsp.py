"""The language server end to end: a real `fim-lsp` process (pytest-lsp drives it over stdio)
and a real `fim-server serve` worker on the bundled diffusion model.

One worker is shared by the module; the tests that kill or spawn workers make their own.
Each test starts its own `fim-lsp` (about a second). Settings go in through
initializationOptions, so each test also exercises them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from fim_server.wire.client import WorkerClient
from fim_server.wire.options import DecodeConfig
from fim_server.wire.spawn import SpawnedWorker

READY_TIMEOUT = 120
# `self.name = ` right after `def __init__(self, name):`. The expected completion is what the
# bundled diffusion twin answers in-process with the options the server sends for a single-line
# cursor (the retrained twin does not answer "name" here, as the one before it did): the server
# must deliver exactly that, whatever passes through LSP, ZeroMQ and the worker.
POINT = "def __init__(self, name):\n    self.name = \n"
POINT_CURSOR = (1, 16)


@functools.cache
def point_answer(kind: str = "diffusion") -> str:
    """The `kind` engine's answer to POINT on the bundled model, through the server's own
    post-processing rules (the shared worker runs the canvas engine; a spawned one the default)."""
    from fim_server.engine import InfillRequest, load_engine
    from lsp.completion import finish
    from lsp.cursor import cursor_context

    engine = load_engine(kind, device="cpu", dtype="float32")
    config = engine.default_config().replace(single_line=True, max_tokens=32)
    raw = engine.infill([InfillRequest("def __init__(self, name):\n    self.name = ", "\n")], config)[0].text
    return finish(raw, cursor_context(POINT, *POINT_CURSOR), 8)


# cursor at the end of the line that ends with `|`: the retrained bundled twin's completion
# makes each of these compile, whatever its max_tokens
COMPILING = [
    "for i in range(10):\n    print(|\n",
    "with open(path) as f:\n    data = f.|\n",
    "import sys\n\n\ndef main(argv):\n    return 0\n\n\nif __name__ == '__main__':\n    sys.exit(|\n",
]
# a slow request: 128 masked slots, one committed per full forward (seconds on CPU)
SLOW_ENGINE = {"max_tokens": 128, "cache": "none", "threshold": 1.0, "length": "fixed", "block_size": 128}
SLOW_DOC = "def total(values):\n    \n"
SLOW_CURSOR = (1, 4)


# ---------------------------------------------------------------- processes


def Worker(bind: str, log_dir: str) -> SpawnedWorker:
    """`fim-server serve` on the bundled canvas diffusion model (the cases and SLOW_ENGINE above
    are the canvas engine's), one torch thread, ready when it says so."""
    return SpawnedWorker(bind, Path(log_dir) / f"worker-{time.monotonic_ns()}.log", engine="diffusion",
                         threads=1, extra=("--device", "cpu"), timeout=READY_TIMEOUT)


@pytest.fixture(scope="module")
def sock_dir():
    path = tempfile.mkdtemp(prefix="fiml-")       # ipc:// paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(sock_dir):
    w = Worker(f"ipc://{sock_dir}/shared.sock", sock_dir)
    yield w
    assert w.stop() == 0


def fim_lsp() -> list[str]:
    script = Path(sys.executable).with_name("fim-lsp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lsp.server"]


CAPABILITIES = lsp.ClientCapabilities(text_document=lsp.TextDocumentClientCapabilities(
    inline_completion=lsp.InlineCompletionClientCapabilities()))


class Servers:
    """Fresh fim-lsp processes, each initialized; whatever is still running is shut down."""

    def __init__(self) -> None:
        self.clients: list[LanguageClient] = []

    async def __call__(self, *args: str, options: dict | None = None, pulled: dict | None = None) -> LanguageClient:
        """options: initializationOptions; pulled: settings the client hands out when the
        server asks with workspace/configuration (section "fim")."""
        client = await ClientServerConfig(server_command=[*fim_lsp(), *args]).start()
        self.clients.append(client)
        capabilities = CAPABILITIES
        if pulled is not None:
            client.set_configuration(pulled, section="fim")
            capabilities = lsp.ClientCapabilities(text_document=CAPABILITIES.text_document,
                                                  workspace=lsp.WorkspaceClientCapabilities(configuration=True))
        await client.initialize_session(lsp.InitializeParams(capabilities=capabilities,
                                                             initialization_options=options))
        return client

    async def stop(self, client: LanguageClient) -> None:
        self.clients.remove(client)
        await client.shutdown_session()
        await client.stop()


@pytest_asyncio.fixture
async def start_lsp():
    servers = Servers()
    yield servers
    for client in list(servers.clients):
        await servers.stop(client)


async def lsp_on(start_lsp, worker: Worker, **options) -> LanguageClient:
    """A server on `worker`; a generous deadline, so that a loaded CI machine is not an outage."""
    worker_settings = {"address": worker.address, "timeoutMs": 30_000}
    return await start_lsp("--no-spawn", options={"worker": worker_settings, **options})


# ---------------------------------------------------------------- requests


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))


def insert(client: LanguageClient, uri: str, version: int, line: int, character: int, text: str) -> None:
    here = lsp.Position(line=line, character=character)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=here, end=here), text=text)]))


def inline_params(uri: str, line: int, character: int, invoked: bool = True) -> lsp.InlineCompletionParams:
    kind = lsp.InlineCompletionTriggerKind.Invoked if invoked else lsp.InlineCompletionTriggerKind.Automatic
    return lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=character),
        context=lsp.InlineCompletionContext(trigger_kind=kind))


def send_inline(client: LanguageClient, params: lsp.InlineCompletionParams) -> asyncio.Future:
    """Send now (on the next loop turn), await the reply later."""
    return asyncio.ensure_future(client.text_document_inline_completion_async(params))


async def inline(client: LanguageClient, uri: str, line: int, character: int, invoked: bool = True) -> list:
    result = await client.text_document_inline_completion_async(inline_params(uri, line, character, invoked))
    items = result.items if isinstance(result, lsp.InlineCompletionList) else (result or [])
    return list(items)


async def server_stats(client: LanguageClient) -> dict:
    return plain(await client.protocol.send_request_async("fim/stats", {}))


def plain(value):
    """pygls hands an unknown method's result over as nested namedtuples: back to dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


async def worker_stats(worker: Worker) -> dict:
    async with WorkerClient(worker.address) as c:
        return await c.stats(deadline_s=10)


async def wait_until(predicate, timeout: float = 30.0, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError("condition not reached in time")


def apply(text: str, line: int, character: int, insert_text: str) -> str:
    lines = text.split("\n")
    lines[line] = lines[line][:character] + insert_text + lines[line][character:]
    return "\n".join(lines)


# ---------------------------------------------------------------- completions


async def test_inline_completion_fills_the_simple_case_exactly(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    open_doc(client, "file:///point.py", POINT)
    items = await inline(client, "file:///point.py", *POINT_CURSOR)
    assert len(items) == 1
    item = items[0]
    assert item.insert_text == point_answer() != ""
    assert apply(POINT, *POINT_CURSOR, item.insert_text) == f"def __init__(self, name):\n    self.name = {point_answer()}\n"
    assert item.command.command == "fim.accept" and item.command.arguments[0] == "file:///point.py"
    here = lsp.Position(line=1, character=16)
    assert item.range == lsp.Range(start=here, end=here)


@pytest.mark.parametrize("case", range(len(COMPILING)))
async def test_inline_completion_makes_the_document_compile(start_lsp, worker, case):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    marked = COMPILING[case]
    offset = marked.index("|")
    doc = marked.replace("|", "")
    line, character = marked[:offset].count("\n"), offset - marked.rfind("\n", 0, offset) - 1
    uri = f"file:///compiles-{case}.py"
    open_doc(client, uri, doc)
    with pytest.raises(SyntaxError):
        compile(doc, uri, "exec")                                     # as typed, it does not
    items = await inline(client, uri, line, character)
    assert len(items) == 1 and items[0].insert_text.strip()
    compile(apply(doc, line, character, items[0].insert_text), uri, "exec")


async def test_completion_request_gives_the_middle_as_one_item(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    open_doc(client, "file:///classic.py", "def __init__(self, name):\n    self\n")   # a word before the cursor
    result = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri="file:///classic.py"),
        position=lsp.Position(line=1, character=8)))
    assert result.is_incomplete and len(result.items) == 1
    item = result.items[0]
    # the edit replaces the typed word, so that clients filtering by it keep the item
    assert item.text_edit.range.start == lsp.Position(line=1, character=4)
    assert item.text_edit.range.end == lsp.Position(line=1, character=8)
    new_text = item.text_edit.new_text
    assert new_text.startswith("self") and len(new_text) > 4 and "\n" not in new_text
    assert item.filter_text == new_text and item.label == new_text.strip()
    assert item.command.command == "fim.accept"


SHAPE = ("import os\n\n\ndef total(values):\n    result = 0\n    for value in values:\n"
         "        \n    return result\n\n\ndef name(path):\n    return os.path.\n")


@pytest.mark.parametrize("line, character", [(0, 9), (4, 14), (11, 19)])
async def test_single_line_completions_stay_on_their_line(start_lsp, worker, line, character):
    """Whatever the weak model says, at the end of a non-empty line only the line is completed."""
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    open_doc(client, "file:///shape.py", SHAPE)
    for item in await inline(client, "file:///shape.py", line, character):
        assert item.insert_text.strip() and "\n" not in item.insert_text


@pytest.mark.parametrize("line, character, floor, repeat", [
    (6, 8, 8, "return result"),            # an indented empty line: stay at its depth or deeper
    (3, 18, 1, "result = 0"),              # after a block opener: the body is indented
    (10, 15, 1, "return os.path."),
])
async def test_multi_line_completions_stay_in_their_block(start_lsp, worker, line, character, floor, repeat):
    """Within maxLines, no line dedented out of the block, no repeat of the line after the cursor."""
    client = await lsp_on(start_lsp, worker, debounceMs=0, maxLines=3)
    open_doc(client, "file:///shape.py", SHAPE)
    for item in await inline(client, "file:///shape.py", line, character):
        lines = item.insert_text.split("\n")
        assert len(lines) <= 3 and item.insert_text.strip()
        assert all(len(x) - len(x.lstrip()) >= floor for x in lines[1:] if x.strip())
        assert not any(x.strip() == repeat for x in lines)


async def test_typed_ahead_reuse_makes_no_worker_call(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    uri = "file:///typed.py"
    open_doc(client, uri, POINT)
    first = (await inline(client, uri, *POINT_CURSOR))[0].insert_text
    assert len(first) >= 2
    served = (await worker_stats(worker))["served"]
    insert(client, uri, 2, *POINT_CURSOR, first[0])                   # the user types its first character
    items = await inline(client, uri, POINT_CURSOR[0], POINT_CURSOR[1] + 1, invoked=False)
    assert [i.insert_text for i in items] == [first[1:]]
    assert (await worker_stats(worker))["served"] == served           # the worker never heard of it
    stats = await server_stats(client)
    assert stats["reused"] == 1 and stats["computed"] == 1 and stats["shown"] == 2


async def test_accept_command_and_stats(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    open_doc(client, "file:///accept.py", POINT)
    item = (await inline(client, "file:///accept.py", *POINT_CURSOR))[0]
    await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
        command=item.command.command, arguments=item.command.arguments))
    stats = await server_stats(client)
    assert (stats["requests"], stats["shown"], stats["accepted"]) == (1, 1, 1)
    assert stats["acceptance_rate"] == 1.0 and stats["latency_ms"]["p50"] > 0
    assert stats["worker"]["state"] == "up" and stats["settings"]["debounceMs"] == 0


# ---------------------------------------------------------------- latest wins


async def test_a_burst_of_edits_computes_one_completion(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=300, adaptiveDebounce=False)
    uri = "file:///burst.py"
    open_doc(client, uri, POINT)
    served = (await worker_stats(worker))["served"]
    pending = []
    for k, char in enumerate("nam"):                                  # type "nam", asking after each key
        insert(client, uri, 2 + k, 1, 16 + k, char)
        pending.append(send_inline(client, inline_params(uri, 1, 17 + k, invoked=False)))
        await asyncio.sleep(0)
    results = await asyncio.gather(*pending)
    assert [len(r.items) for r in results[:-1]] == [0, 0]              # superseded: answered empty
    stats = await server_stats(client)
    assert stats["cancelled"] == 2 and stats["computed"] == 1
    assert (await worker_stats(worker))["served"] == served + 1


async def test_a_newer_request_cancels_the_older_in_the_worker(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0, engine=SLOW_ENGINE)
    uri = "file:///slow.py"
    open_doc(client, uri, SLOW_DOC)
    before = await worker_stats(worker)
    older = send_inline(client, inline_params(uri, *SLOW_CURSOR))
    await wait_until(lambda: _running(worker), every=0.02)           # it is being decoded
    insert(client, uri, 2, 1, 4, "r")
    newer = send_inline(client, inline_params(uri, 1, 5))
    assert len((await older).items) == 0
    await asyncio.wait_for(newer, 60)
    after = await worker_stats(worker)
    assert after["cancelled"] == before["cancelled"] + 1              # stopped between steps
    assert after["served"] == before["served"] + 1
    assert (await server_stats(client))["cancelled"] == 1


async def test_cancel_request_reaches_the_worker(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0, engine=SLOW_ENGINE)
    uri = "file:///cancel.py"
    open_doc(client, uri, SLOW_DOC)
    before = await worker_stats(worker)
    reply = asyncio.ensure_future(client.protocol.send_request_async(
        "textDocument/inlineCompletion", inline_params(uri, *SLOW_CURSOR), msg_id="slow-1"))
    await wait_until(lambda: _running(worker), every=0.02)
    client.protocol.notify("$/cancelRequest", lsp.CancelParams(id="slow-1"))
    with pytest.raises(JsonRpcRequestCancelled):
        await reply
    after = await wait_until(lambda: _cancelled_since(worker, before))
    assert after["served"] == before["served"]
    assert (await server_stats(client))["cancelled"] == 1


async def _running(worker: Worker) -> bool:
    stats = await worker_stats(worker)
    return stats["running"] >= 1


async def _cancelled_since(worker: Worker, before: dict):
    stats = await worker_stats(worker)
    return stats if stats["cancelled"] > before["cancelled"] else None


# ---------------------------------------------------------------- bad input


async def test_bad_input_gets_sane_replies(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    assert await inline(client, "file:///never-opened.py", 0, 0) == []
    # one document per exact check: the worker may reuse a document's cached prefix, which
    # (bidirectional attention) can change the weak model's greedy answer
    open_doc(client, "file:///past-end.py", POINT)
    past_end = await inline(client, "file:///past-end.py", 999, 999)  # clamped to the end of the document
    end = lsp.Position(line=2, character=0)
    assert all(i.insert_text.strip() and i.range.start == end for i in past_end)
    open_doc(client, "file:///past-line.py", POINT)
    past_line = await inline(client, "file:///past-line.py", 1, 500)  # = the end of line 1
    assert [i.insert_text for i in past_line] == [point_answer()]
    open_doc(client, "file:///blob.bin", "abc\x00\x01\x02def\n" * 10, language="plaintext")
    assert await inline(client, "file:///blob.bin", 3, 4) == []
    # 5.4 MB before the cursor: over the worker's frame limit unless the server clips it
    huge = "x = 1\n" * 900_000 + POINT
    open_doc(client, "file:///huge.py", huge)
    items = await inline(client, "file:///huge.py", 900_000 + POINT_CURSOR[0], POINT_CURSOR[1])
    assert all(i.insert_text.strip() and "\n" not in i.insert_text for i in items)
    await client.workspace_execute_command_async(lsp.ExecuteCommandParams(command="fim.accept"))
    stats = await server_stats(client)
    assert stats["bad_input"] == 2 and stats["accepted"] == 1
    assert stats["worker_errors"] == 0 and stats["computed"] == 3
    assert client.messages == []                                      # nothing to bother the user with


async def test_lone_surrogates_in_the_context_still_get_a_completion(start_lsp, worker):
    # JSON lets a client send "\ud800"; msgpack cannot encode it, and every completion in the
    # document used to fail. The worker is asked with U+FFFD in its place.
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    text = "note = '{0} and {1}'\n" + POINT
    open_doc(client, "file:///surrogates.py", text.format("\ud800", "\udfff"))
    open_doc(client, "file:///replaced.py", text.format("\ufffd", "\ufffd"))
    line, character = POINT_CURSOR[0] + 1, POINT_CURSOR[1]
    items = [i.insert_text for i in await inline(client, "file:///surrogates.py", line, character)]
    assert items == [i.insert_text for i in await inline(client, "file:///replaced.py", line, character)]
    stats = await server_stats(client)
    assert stats["computed"] == 2 and stats["worker_errors"] == 0
    assert not [m for m in client.log_messages if "internal error" in m.message]


async def raw_request(client: LanguageClient, msg_id: str, method: str, params) -> object:
    """Send params as they are, past the client's own type checks; await the reply."""
    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 30)


async def test_malformed_requests_get_error_replies(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs=0)
    open_doc(client, "file:///malformed.py", POINT)
    insert(client, "file:///never-opened.py", 2, 0, 0, "x")          # a change to an unknown document
    here = {"textDocument": {"uri": "file:///malformed.py"}, "context": {"triggerKind": 1}}
    for k, params in enumerate(({**here, "position": {"line": -1, "character": 0}},
                                {**here, "position": {"line": 2 ** 40, "character": 0}},
                                {"textDocument": {"uri": "file:///malformed.py"}})):
        with pytest.raises(JsonRpcInvalidParams):                      # answered, not left hanging
            await raw_request(client, f"bad-{k}", "textDocument/inlineCompletion", params)
    with pytest.raises(JsonRpcInvalidParams):
        await raw_request(client, "cmd", "workspace/executeCommand", {"command": "fim.nothing"})
    assert [i.insert_text for i in await inline(client, "file:///malformed.py", *POINT_CURSOR)] == [point_answer()]
    assert client.messages == []


def frame(body: bytes, length: int | None = None) -> bytes:
    """One LSP frame; `length`: the Content-Length to announce instead of the body's own."""
    return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


def request(msg_id: int, method: str, params: dict) -> bytes:
    return frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode())


def read_frames(stream, into: queue.Queue) -> None:
    """Each JSON message of an LSP byte stream into `into`, then None at its end."""
    while True:
        length = None
        while (line := stream.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if not line or length is None:
            into.put(None)
            return
        into.put(json.loads(stream.read(length)))


def reply_to(replies: queue.Queue, msg_id: int, timeout: float = 60) -> dict | None:
    """The reply to msg_id; None when the stream ended first. The timeout only bounds the wait."""
    end = time.monotonic() + timeout
    try:
        while (message := replies.get(timeout=max(0.0, end - time.monotonic()))) is not None:
            if message.get("id") == msg_id and "method" not in message:
                return message
    except queue.Empty:
        raise AssertionError(f"no reply to {msg_id} in {timeout} s, and the server is still running") from None
    return None


def test_a_frame_with_a_wrong_content_length_does_not_deafen_the_server(tmp_path):
    """An editor restarts a server that exits, not one that hangs: after a frame whose
    Content-Length is wrong, fim-lsp must answer the next requests, or exit with an error."""
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        server = subprocess.Popen([*fim_lsp(), "--no-spawn", "--connect", "tcp://127.0.0.1:1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
    replies: queue.Queue = queue.Queue()
    threading.Thread(target=read_frames, args=(server.stdout, replies), daemon=True).start()
    try:
        server.stdin.write(request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {}}))
        server.stdin.flush()
        assert "capabilities" in reply_to(replies, 1)["result"]
        # 500 announced, 20 sent: the next request's bytes would be taken for the rest of the body
        server.stdin.write(frame(b'{"jsonrpc": "2.0", "', length=500) + request(2, "fim/stats", {}))
        # 8 announced, 40 sent: the rest of the body would stand in front of the next header
        server.stdin.write(frame(b'{"jsonrpc": "2.0", "method": "nothing"}', length=8) + request(3, "fim/stats", {}))
        server.stdin.flush()
        for msg_id in (2, 3):
            answer = reply_to(replies, msg_id)
            if answer is None:                                        # gave up: it must say so and fail
                assert server.wait(timeout=60) != 0
                assert "Content-Length" in log.read_text()
                return
            assert "requests" in answer["result"]
        server.stdin.close()                                          # the end of input still ends it
        assert server.wait(timeout=60) == 0
        said = log.read_text()                                        # what the user's log says
        assert "shorter than its Content-Length" in said and "longer than its Content-Length" in said
    finally:
        server.kill()
        server.wait()


async def test_invalid_settings_are_reported_and_defaults_used(start_lsp, worker):
    client = await lsp_on(start_lsp, worker, debounceMs="soon", maxLines=0, colour="blue",
                          engine={"threshold": 3, "max_tokens": 16}, enabled={"markdown": False})
    await wait_until(_has_messages(client))
    text = client.messages[0].message
    assert "debounceMs" in text and "maxLines" in text and "colour" in text and "engine.threshold" in text
    settings = (await server_stats(client))["settings"]
    assert settings["debounceMs"] == 0 and settings["maxLines"] == 8       # the defaults
    assert settings["engine"] == {"max_tokens": 16}                         # the valid entry kept
    open_doc(client, "file:///notes.md", "# Notes\n\nself.name = \n", language="markdown")
    assert await inline(client, "file:///notes.md", 2, 12) == []            # disabled language
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
        settings={"fim": {"worker": {"address": worker.address, "timeoutMs": 30_000}, "maxLines": 2}}))
    await wait_until(_setting(client, "maxLines", 2))
    await inline(client, "file:///notes.md", 2, 12)                        # enabled again: the worker answers
    stats = await server_stats(client)
    assert (stats["disabled"], stats["computed"]) == (1, 1)


async def test_settings_pulled_with_workspace_configuration(start_lsp, worker):
    client = await start_lsp("--no-spawn", pulled={"worker": {"address": worker.address, "timeoutMs": 30_000},
                                                   "maxLines": 3, "debounceMs": 0})
    await wait_until(_setting(client, "maxLines", 3))
    assert (await server_stats(client))["worker"]["address"] == worker.address
    open_doc(client, "file:///pulled.py", POINT)
    assert [i.insert_text for i in await inline(client, "file:///pulled.py", *POINT_CURSOR)] == [point_answer()]
    client.set_configuration(5, section="fim.maxLines")
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings=None))
    await wait_until(_setting(client, "maxLines", 5))               # pulled again on the change
    assert client.messages == []


def _has_messages(client: LanguageClient):
    async def check():
        return bool(client.messages)
    return check


def _setting(client: LanguageClient, name: str, value):
    async def check():
        return (await server_stats(client))["settings"][name] == value
    return check


# ---------------------------------------------------------------- worker outages


async def test_worker_loss_tells_the_user_once_and_completions_resume(start_lsp, sock_dir):
    own = Worker(f"ipc://{sock_dir}/lost.sock", sock_dir)
    client = await start_lsp("--connect", own.address, "--no-spawn",
                             options={"debounceMs": 0, "worker": {"timeoutMs": 4000}})
    open_doc(client, "file:///lost.py", POINT)
    assert [i.insert_text for i in await inline(client, "file:///lost.py", *POINT_CURSOR)] == [point_answer()]
    own.stop(signal.SIGKILL)
    for _ in range(4):
        assert await inline(client, "file:///lost.py", *POINT_CURSOR) == []
    assert len(client.messages) == 1
    assert client.messages[0].type == lsp.MessageType.Warning and own.address in client.messages[0].message
    back = Worker(f"ipc://{sock_dir}/lost.sock", sock_dir)
    try:
        await wait_until(_worker_state(client, "up"), timeout=30)
        assert [i.insert_text for i in await inline(client, "file:///lost.py", *POINT_CURSOR)] == [point_answer()]
        assert len(client.messages) == 1
        stats = await server_stats(client)
        assert stats["unavailable"] >= 1 and stats["shown"] == 2
    finally:
        back.stop()


async def test_spawns_a_worker_when_none_answers(start_lsp, sock_dir):
    address = f"ipc://{sock_dir}/spawned/w.sock"
    client = await start_lsp("--connect", address,
                             options={"debounceMs": 0, "worker": {"threads": 1, "timeoutMs": 30_000}})
    status = await wait_until(_worker_state(client, "up"), timeout=READY_TIMEOUT)
    pid = status["spawned_pid"]
    assert pid is not None
    open_doc(client, "file:///spawned.py", POINT)
    want = point_answer(DecodeConfig.engine)                          # a spawned worker runs the default engine
    assert [i.insert_text for i in await inline(client, "file:///spawned.py", *POINT_CURSOR)] == [want]
    assert client.messages == []                                      # spawning is not an outage
    await start_lsp.stop(client)
    await asyncio.to_thread(_wait_gone, pid)


async def test_a_spawned_worker_exits_when_the_server_is_killed(start_lsp, sock_dir):
    """An editor crash SIGKILLs fim-lsp: the worker it started must not keep the model's memory
    and the address forever."""
    address = f"ipc://{sock_dir}/orphan/w.sock"
    client = await start_lsp("--connect", address, options={"worker": {"threads": 1}})
    status = await wait_until(_worker_state(client, "up"), timeout=READY_TIMEOUT)
    pid = status["spawned_pid"]
    start_lsp.clients.remove(client)                                  # nobody is left to shut down
    os.kill(client._server.pid, signal.SIGKILL)
    await client.stop()
    try:
        await asyncio.to_thread(_wait_gone, pid)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)                              # not left behind when it fails


def _worker_state(client: LanguageClient, state: str):
    async def check():
        status = (await server_stats(client))["worker"]
        return status if status["state"] == state else None
    return check


def _wait_gone(pid: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _gone(pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"the spawned worker {pid} outlived the server")


def _gone(pid: int) -> bool:
    """No such process, or one that exited and is not reaped yet: an orphan's new parent (init,
    or a container's first process) may be slow to reap it, or never do."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
