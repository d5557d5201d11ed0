"""The language server's pieces on their own: cursor context, post-processing, typed-ahead
reuse, settings, latest-wins and debounce, telemetry. No processes, no model."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from types import SimpleNamespace

import pytest
import zmq
import zmq.asyncio
from pygls import io_ as pygls_io

from fim_server.wire.client import WorkerClient
from fim_server.wire.protocol import ResponseMsg, decode, encode
from fim_server.wire.typed_ahead import TypedAhead
from fim_server.engine.postprocess import postprocess
from lsp.completion import finish
from lsp.cursor import cursor_context, is_single_line
from lsp.debounce import Debouncer, LatestWins, Superseded
from lsp.server import FrameReader
from lsp.settings import Settings, parse_settings
from lsp.telemetry import Telemetry
from fim_server.wire.addresses import is_loopback as is_local
from lsp.worker_link import SPAWNED_IDLE_EXIT_S, WorkerLink

# ---------------------------------------------------------------- cursor context


def test_context_splits_at_the_cursor():
    ctx = cursor_context("def f(x):\n    return x\n", 1, 4)
    assert (ctx.prefix, ctx.suffix) == ("def f(x):\n    ", "return x\n")
    assert (ctx.line, ctx.character, ctx.offset) == (1, 4, 14)
    assert (ctx.line_before, ctx.line_after) == ("    ", "return x")


def test_positions_past_the_end_are_clamped():
    source = "ab\ncd"
    past_line_end = cursor_context(source, 0, 99)
    assert (past_line_end.prefix, past_line_end.suffix, past_line_end.character) == ("ab", "\ncd", 2)
    past_last_line = cursor_context(source, 42, 7)
    assert (past_last_line.prefix, past_last_line.suffix) == (source, "")
    assert (past_last_line.line, past_last_line.character) == (1, 2)
    assert cursor_context("", 3, 3).prefix == ""


def test_columns_in_utf16_utf8_and_crlf():
    source = 'x = "\U0001F60B" + y\r\nz'
    # the emoji is 2 UTF-16 units, 4 UTF-8 bytes, 1 code point
    assert cursor_context(source, 0, 8, "utf-16").line_after == ' + y'
    assert cursor_context(source, 0, 10, "utf-8").line_after == ' + y'
    assert cursor_context(source, 0, 7, "utf-32").line_after == ' + y'
    assert cursor_context(source, 0, 6, "utf-16").line_after == '\U0001F60B" + y'   # inside the pair
    assert cursor_context(source, 0, 99).line_after == ""           # stops before \r\n
    assert cursor_context(source, 0, 99).suffix == "\r\nz"


def test_huge_documents_are_clipped_at_line_boundaries():
    source = "".join(f"line_{i} = {i}\n" for i in range(200_000))
    ctx = cursor_context(source, 100_000, 4, prefix_chars=1000, suffix_chars=500)
    assert len(ctx.prefix) <= 1000 and len(ctx.suffix) <= 500
    assert ctx.prefix.startswith("line_") and ctx.prefix.endswith("\nline")
    assert ctx.suffix.startswith("_100000 = 100000\n") and ctx.suffix.endswith("\n")


def test_binary_text_near_the_cursor_is_flagged():
    assert cursor_context("abc\x00def", 0, 3).binary
    assert not cursor_context("abc def", 0, 3).binary


@pytest.mark.parametrize("encoding, character", [("utf-16", 12), ("utf-8", 16), ("utf-32", 12)])
def test_lone_surrogates_become_replacement_characters(encoding, character):
    # JSON lets a client send "\ud800"; it has no UTF-8 form, so the worker could not be asked
    source = "a = '\ud800 and \udfff'\nb = \udfff\n"
    ctx = cursor_context(source, 0, character, encoding)
    assert ctx.prefix == "a = '\ufffd and \ufffd" and ctx.suffix == "'\nb = \ufffd\n"
    assert (ctx.line_before, ctx.line_after) == ("a = '\ufffd and \ufffd", "'")
    assert (ctx.character, ctx.offset) == (character, 12)          # positions are unchanged
    (ctx.prefix + ctx.suffix + ctx.line_before + ctx.line_after).encode("utf-8")


async def test_worker_client_sends_lone_surrogates_as_replacement_characters():
    """Any client of the worker, not only fim-lsp: a fake worker gets what msgpack could send."""
    ctx = zmq.asyncio.Context()
    worker = ctx.socket(zmq.ROUTER)
    port = worker.bind_to_random_port("tcp://127.0.0.1")
    client = WorkerClient(f"tcp://127.0.0.1:{port}", context=ctx)
    try:
        reply = asyncio.ensure_future(client.infill("x = '\ud800", "\udfff'\n", deadline_s=30))
        received = asyncio.ensure_future(worker.recv_multipart())
        await asyncio.wait({reply, received}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        # a failed infill raises here what it raised (it used to be UnicodeEncodeError)
        assert received.done(), reply.result() if reply.done() else "the worker got nothing"
        identity, frame = received.result()
        request = decode(frame)
        assert (request.prefix, request.suffix) == ("x = '\ufffd", "\ufffd'\n")
        await worker.send_multipart([identity, encode(ResponseMsg(id=request.id, text="1"))])
        assert (await reply).text == "1"
    finally:
        client.close()
        worker.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("before, after, single", [
    ("    return ", "", True),              # end of a non-empty line
    ("    x = foo(", ")", True),            # inside a line
    ("", "", False),                        # empty line
    ("        ", "", False),                # indentation only
    ("def f(x):", "", False),               # after a block opener
    ("if (x) {", "  ", False),
])
def test_single_or_multi_line_from_the_cursor(before, after, single):
    assert is_single_line(before, after) is single


# ---------------------------------------------------------------- post-processing


def ctx_at_end(prefix: str, suffix: str = ""):
    source = prefix + suffix
    lines = prefix.split("\n")
    return cursor_context(source, len(lines) - 1, len(lines[-1]))


def test_single_line_completion_stays_on_its_line():
    ctx = ctx_at_end("def f(name):\n    x = ", "\n")
    assert finish("name\n    return x\n", ctx, 8) == "name"
    assert finish("\n\n    def other(self):", ctx, 8) == ""     # starts a new line: nothing
    assert finish("   \n", ctx, 8) == ""


def engine_text(middle, ctx):
    """What the worker sends: the engine post-processed the middle once already."""
    return postprocess(middle, ctx.prefix, ctx.suffix, ctx.single_line)


def test_single_line_trims_the_suffix_it_repeats():
    ctx = ctx_at_end("print(foo(", ")\n")
    assert finish(engine_text("x))", ctx), ctx, 8) == "x)"


def test_the_engines_text_is_shown_unchanged_where_no_editor_rule_applies():
    """The LSP does not post-process again: `x = f(g(` + `a)` + `)` stays `a)` (a second
    pass once cut it to `a`, leaving `f(g(a)` in the file), and indentation is not stripped twice."""
    ctx = ctx_at_end("x = f(g(", ")\n")
    assert finish(engine_text("a))", ctx), ctx, 8) == "a)"
    assert finish("a)", ctx, 8) == "a)"
    ctx = ctx_at_end("def f():\n    ", "\n")
    assert finish("    x = 1", ctx, 8) == "    x = 1"


def test_multi_line_is_capped_and_stays_in_the_block():
    ctx = ctx_at_end("def f(x):", "\n\n\ndef g():\n    pass\n")
    middle = "\n    a = 1\n    b = 2\n    c = 3\n    d = 4\n"
    assert finish(middle, ctx, 3) == "\n    a = 1\n    b = 2"
    assert finish("\n    return x\n\nprint(f(1))\n", ctx, 8) == "\n    return x"
    assert finish("\nreturn x\n", ctx, 8) == ""                 # body not indented: nothing


def test_multi_line_on_an_indented_empty_line():
    ctx = ctx_at_end("def f(x):\n    ", "\n    return y\n")
    # the duplicated indentation of the first line is removed; the repeat of the suffix is cut
    assert finish(engine_text("    y = x + 1\n    return y\n", ctx), ctx, 8) == "y = x + 1"
    assert finish("y = 2\n    if y:\n        y += 1\nz = 0", ctx, 8) == "y = 2\n    if y:\n        y += 1"


def test_nothing_when_the_model_gives_nothing():
    for ctx in (ctx_at_end("x = "), ctx_at_end("def f():")):
        assert finish("", ctx, 8) == ""
        assert finish("\n\n  \n", ctx, 8) == ""


# ---------------------------------------------------------------- typed-ahead reuse


def lookup(cache, uri, ctx):
    return cache.lookup(uri, ctx.prefix, ctx.suffix, offset=ctx.offset)


def test_typed_ahead_serves_the_rest_of_the_shown_completion():
    cache = TypedAhead()
    source = "def f(name):\n    self.x = \n"
    ctx = cursor_context(source, 1, 13)
    cache.remember("a.py", ctx.prefix, ctx.suffix, "name_of_x", offset=ctx.offset)
    typed = source[:ctx.offset] + "na" + source[ctx.offset:]
    assert lookup(cache, "a.py", cursor_context(typed, 1, 15)) == "me_of_x"
    typed_more = typed[:ctx.offset + 2] + "me" + typed[ctx.offset + 2:]
    assert lookup(cache, "a.py", cursor_context(typed_more, 1, 17)) == "_of_x"   # chained


def test_typed_ahead_misses_when_the_text_disagrees():
    cache = TypedAhead()
    source = "x = \ny = 2\n"
    ctx = cursor_context(source, 0, 4)
    cache.remember("a.py", ctx.prefix, ctx.suffix, "foo(1)", offset=ctx.offset)
    other_char = "x = g\ny = 2\n"
    assert lookup(cache, "a.py", cursor_context(other_char, 0, 5)) is None
    other_suffix = "x = f\ny = 3\n"
    assert lookup(cache, "a.py", cursor_context(other_suffix, 0, 5)) is None
    assert lookup(cache, "b.py", cursor_context("x = f\ny = 2\n", 0, 5)) is None
    assert lookup(cache, "a.py", ctx) is None                        # nothing typed: ask again
    whole = "x = foo(1)\ny = 2\n"
    assert lookup(cache, "a.py", cursor_context(whole, 0, 10)) is None   # all of it typed


# ---------------------------------------------------------------- settings


def test_settings_nested_dotted_and_under_the_section():
    raw = {"worker": {"address": "ipc:///tmp/w.sock", "timeoutMs": 900}, "debounceMs": 10,
           "maxLines": 3, "engine": {"max_tokens": 16, "threshold": 1}, "enabled": {"markdown": False},
           "spawnWorker": False}
    settings, problems = parse_settings(raw)
    assert problems == []
    assert settings.worker_address == "ipc:///tmp/w.sock" and settings.worker_timeout_ms == 900
    assert (settings.debounce_ms, settings.max_lines, settings.spawn_worker) == (10, 3, False)
    assert dict(settings.engine) == {"max_tokens": 16, "threshold": 1.0}
    assert not settings.enabled_for("markdown") and settings.enabled_for("python")
    assert parse_settings({"fim": raw})[0] == settings
    assert parse_settings({"worker.address": "ipc:///tmp/w.sock"})[0].worker_address == "ipc:///tmp/w.sock"


def test_invalid_settings_are_reported_and_defaults_used():
    defaults = Settings()
    raw = {"debounceMs": -5, "maxLines": "many", "worker": {"address": "http://x"},
           "engine": {"threshold": 7.0, "cache": "dual", "single_line": True, "bogus": 1},
           "enabled": "yes", "colour": "blue"}
    settings, problems = parse_settings(raw)
    assert settings.debounce_ms == defaults.debounce_ms
    assert settings.max_lines == defaults.max_lines
    assert settings.worker_address == defaults.worker_address
    assert dict(settings.engine) == {"cache": "dual"}               # the good entry is kept
    assert settings.enabled_for("python")
    text = "\n".join(problems)
    for name in ("debounceMs", "maxLines", "worker.address", "engine.threshold",
                 "engine.single_line", "engine.bogus", "enabled", "colour"):
        assert name in text
    assert parse_settings([1, 2])[0] == defaults and parse_settings([1, 2])[1]
    assert parse_settings(None) == (defaults, [])


def test_empty_lua_tables_are_empty_settings():
    # what Neovim sends for setup({}): initializationOptions [], the pulled "fim" section [],
    # and didChangeConfiguration {"fim": []} (an empty Lua table is a JSON array)
    defaults = Settings()
    for raw in ([], {"fim": []}, {"worker": [], "engine": [], "enabled": []}, {"fim": {"worker": []}}):
        assert parse_settings(raw) == (defaults, []), raw
    settings, problems = parse_settings(["maxLines", 3])              # a real list is still wrong
    assert settings == defaults and "must be an object" in problems[0]


def test_spawned_worker_runs_the_chosen_engine_and_verifier():
    raw = {"engine": {"engine": "speculative", "draft_length": 6},
           "worker": {"model": "/m/dlm", "arModel": "/m/ar", "threads": 2}}
    settings, problems = parse_settings(raw)
    assert problems == [] and settings.engine_kind == "speculative"
    cmd = WorkerLink(settings, print, print)._command()
    assert cmd[cmd.index("--engine") + 1] == "speculative"
    assert cmd[cmd.index("--model") + 1] == "/m/dlm" and cmd[cmd.index("--ar-model") + 1] == "/m/ar"
    assert settings.to_wire()["worker"]["arModel"] == "/m/ar"
    # the verifier only matters to the speculative engine; a worker without an engine setting gets
    # no --engine (it runs the engine its model's family runs on) and no verifier
    plain = WorkerLink(parse_settings({"worker": {"arModel": "/m/ar"}})[0], print, print)._command()
    assert "--engine" not in plain and "--ar-model" not in plain
    assert "worker.arModel" in parse_settings({"worker": {"arModel": 3}})[1][0]


def test_a_spawned_worker_is_tied_to_the_server_and_leaves_when_idle():
    cmd = WorkerLink(parse_settings({})[0], print, print)._command()
    assert cmd[cmd.index("--parent-pid") + 1] == str(os.getpid())            # gone with the server
    assert float(cmd[cmd.index("--idle-exit") + 1]) == SPAWNED_IDLE_EXIT_S > 0


def test_a_spawned_worker_leaves_cores_to_the_editor():
    cmd = WorkerLink(parse_settings({})[0], print, print)._command()
    assert 1 <= int(cmd[cmd.index("--threads") + 1]) <= max(1, (os.cpu_count() or 1) // 2)
    cmd = WorkerLink(parse_settings({"worker": {"threads": 3}})[0], print, print)._command()
    assert cmd[cmd.index("--threads") + 1] == "3"                            # a setting wins


class ExitedChild:
    pid = 4242

    def __init__(self, status: int):
        self.returncode = status

    async def wait(self) -> int:
        return self.returncode


async def test_a_worker_that_left_when_idle_is_started_again_when_needed():
    link = WorkerLink(parse_settings({})[0], print, print)
    spawned = []

    async def spawn():
        spawned.append(link.state)
        return True, ""

    link._spawn = spawn
    try:
        link.state, link._child = "up", ExitedChild(0)
        await link._watch_child(link._child)           # a clean exit: its idle timeout (or a SIGTERM)
        assert link.state == "idle" and spawned == []  # not restarted while nobody asks for completions
        assert await link.infill("a = ", "", "doc", True, {}, None) is None
        await asyncio.wait_for(link._recovery, 5)
        assert spawned == ["down"] and link.state == "up"
        link._child = ExitedChild(1)                   # a crash (a lost device): restarted at once
        link._last_spawn = -1e9
        await link._watch_child(link._child)
        await asyncio.wait_for(link._recovery, 5)
        assert spawned == ["down", "down"] and link.state == "up"
    finally:
        link._client.close()


def test_local_addresses_only_are_spawnable():
    assert is_local("ipc:///tmp/x.sock") and is_local("tcp://127.0.0.1:5555")
    assert is_local("tcp://localhost:1") and is_local("tcp://[::1]:1")
    assert not is_local("tcp://10.0.0.2:5555") and not is_local("tcp://example.com:1")


# ---------------------------------------------------------------- latest wins, debounce


async def test_a_newer_request_supersedes_the_older():
    latest = LatestWins()
    stopped = []

    async def slow(name):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.append(name)
            raise
        return name

    async def fast():
        return "new"

    first = asyncio.ensure_future(latest.run("doc", lambda: slow("old")))
    other = asyncio.ensure_future(latest.run("other", lambda: slow("other")))
    await asyncio.sleep(0.01)
    assert await latest.run("doc", fast) == "new"
    with pytest.raises(Superseded):
        await first
    assert stopped == ["old"] and not other.done()       # other documents are untouched
    other.cancel()


async def test_cancelling_the_request_cancels_its_work():
    latest = LatestWins()
    stopped = asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(10)
        finally:
            stopped.set()

    request = asyncio.ensure_future(latest.run("doc", work))
    await asyncio.sleep(0.01)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):           # not Superseded: the caller cancelled
        await request
    assert stopped.is_set() and latest.running() == 0


def test_debounce_fixed_and_adaptive():
    now = [0.0]
    debouncer = Debouncer(clock=lambda: now[0])
    assert debouncer.delay_s("d", 50, adaptive=False) == 0.05
    for _ in range(5):                                    # typing every 120 ms
        now[0] += 0.12
        fixed = debouncer.delay_s("d", 50, adaptive=False)
    assert fixed == 0.05
    assert debouncer.delay_s("d", 50, adaptive=True) == pytest.approx(0.15)   # 1.25 x 120 ms
    slow = Debouncer(clock=lambda: now[0])
    for _ in range(5):                                    # every 600 ms: no stretching
        now[0] += 0.6
        wait = slow.delay_s("d", 50, adaptive=True)
    assert wait == 0.05


def test_telemetry_counts_and_percentiles():
    telemetry = Telemetry()
    for i in range(1, 101):
        telemetry.latencies.append(float(i))
    telemetry.count("shown", 4)
    telemetry.count("accepted")
    snap = telemetry.snapshot()
    assert snap["latency_ms"]["p50"] == 50.0 and snap["latency_ms"]["p95"] == 95.0
    assert snap["acceptance_rate"] == 0.25


# ---------------------------------------------------------------- stdio framing


class Trickle(io.RawIOBase):
    """A pipe that delivers a few bytes at a time, as a client's writes may arrive."""

    def __init__(self, data: bytes):
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(7, len(buffer))
        piece, self.data = self.data[:size], self.data[size:]
        memoryview(buffer).cast("B")[:len(piece)] = piece
        return len(piece)


def read_by_pygls(data: bytes) -> list:
    """The messages pygls' own stdio loop reads from `data` through FrameReader."""
    got: list = []
    protocol = SimpleNamespace(structure_message=lambda message: message, handle_message=got.append)
    pygls_io.run(threading.Event(), FrameReader(io.BufferedReader(Trickle(data), 8)), protocol)
    return got


def lsp_frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_frames_are_read_as_they_are():
    messages = [{"id": 1, "params": "x" * 100_000}, {"id": 2, "params": "Content-Length: 9\r\n"}]
    assert read_by_pygls(b"".join(lsp_frame(m) for m in messages)) == messages


@pytest.mark.parametrize("broken", [
    b'Content-Length: 500\r\n\r\n{"id": 1',                 # shorter than announced
    b'Content-Length: 3\r\n\r\n{"id": 1, "params": [1]}',   # longer than announced
])
def test_a_wrong_content_length_costs_its_own_frame_only(broken):
    later = [{"id": 2}, {"id": 3, "params": "x" * 1000}]
    assert read_by_pygls(broken + b"".join(lsp_frame(m) for m in later)) == later


async def test_the_http_front_end_spawns_its_worker_with_the_same_thread_cap(monkeypatch):
    """Both front-ends start a worker on half the CPUs unless told otherwise (wire.spawn.spawn_threads)."""
    import fim_server.http.worker as http_worker
    from fim_server.http.config import HttpConfig
    from fim_server.wire.spawn import SpawnFailed, spawn_threads

    asked = []

    async def fake_spawn(address, log, **kwargs):
        asked.append(kwargs["threads"])
        raise SpawnFailed("test")

    monkeypatch.setattr(http_worker, "spawn_async", fake_spawn)
    for setting in (0, 3):
        await http_worker.WorkerLink(HttpConfig(threads=setting))._spawn()
    assert asked == [spawn_threads(0), 3] and 1 <= asked[0] <= max(1, (os.cpu_count() or 1) // 2)
