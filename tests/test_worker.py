"""The resident worker end to end: real `fim-server serve` processes, real sockets.

One worker process is shared by most tests (module scope); tests that need their own (small
queue, SIGKILL, SIGTERM, CURVE) start one each. The model is a small random checkpoint whose
context is widened to 1024 tokens so that SLOW requests (800 masked positions, one committed
per full forward) run for seconds: long enough to be cancelled, superseded, killed or timed
out while running. They are never waited on to finish.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq

from fim_server.wire.client import RequestFailed, WorkerClient, WorkerUnavailable
from fim_server.wire.curve import client_curve
from fim_server.wire.spawn import SpawnedWorker
from fim_server.wire.protocol import (
    MAX_FRAME_BYTES, ErrorCode, ErrorMsg, HealthMsg, InfillMsg, ResponseMsg, decode, encode,
)
from fim_server.worker.lifetime import EngineHealth, Parent, idle_expired
from fim_server.worker.server import Worker, WorkerOptions

PREFIX = "def add(a, b):\n    return "
FAST = {"max_tokens": 8, "options": {"length": "fixed"}}
SLOW = {"max_tokens": 800, "options": {"cache": "none", "threshold": 1.0, "length": "fixed", "block_size": 800}}
READY_TIMEOUT = 60


# ---------------------------------------------------------------- worker processes


@pytest.fixture
def sock_dir():
    """A short directory for ipc:// paths (they are limited to ~100 characters)."""
    path = tempfile.mkdtemp(prefix="fimw-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def WorkerProcess(model: Path, bind: str, log_dir: str, *extra: str) -> SpawnedWorker:
    """`fim-server serve` on `model`, one torch thread, ready when it says so."""
    return SpawnedWorker(bind, Path(log_dir) / f"worker-{time.monotonic_ns()}.log", model=str(model),
                         threads=1, extra=("--device", "cpu", *extra), timeout=READY_TIMEOUT)


@pytest.fixture(scope="module")
def worker(tiny_model):
    """The shared worker: batches up to 8 requests that arrive within 20 ms."""
    directory = tempfile.mkdtemp(prefix="fimw-")
    w = WorkerProcess(tiny_model, f"ipc://{directory}/w.sock", directory,
                      "--max-batch", "8", "--batch-wait-ms", "20")
    yield w
    assert w.stop() == 0, w.log()
    shutil.rmtree(directory, ignore_errors=True)


class RawPeer:
    """A plain DEALER for frames the client would never send, with a receive timeout."""

    def __init__(self, address: str, curve: tuple[str, str] | None = None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.rcvtimeo = 10_000
        if curve:
            client_curve(self.sock, *curve)
        self.sock.connect(address)

    def send(self, payload: bytes) -> None:
        self.sock.send(payload)

    def recv(self):
        return decode(self.sock.recv())

    def request(self, payload: bytes):
        self.send(payload)
        return self.recv()

    def stats(self) -> dict:
        return self.request(encode(HealthMsg(id=f"h{time.monotonic_ns()}"))).stats

    def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        """Poll the worker's stats until predicate(stats) holds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            stats = self.stats()
            if predicate(stats):
                return stats
            time.sleep(0.02)
        raise AssertionError(f"worker never reached the expected state: {stats}")

    def close(self) -> None:
        self.sock.close()


def infill(id: str, doc_key: str | None = None, timeout_ms: float | None = None, **config) -> bytes:
    spec = {**FAST, **config}
    return encode(InfillMsg(id=id, prefix=PREFIX, suffix="\n", doc_key=doc_key, timeout_ms=timeout_ms,
                            max_tokens=spec["max_tokens"], options=spec["options"]))


@pytest.fixture
def peer(worker):
    p = RawPeer(worker.address)
    yield p
    p.close()


@pytest.fixture
async def client(worker):
    c = WorkerClient(worker.address)
    yield c
    c.close()


# ---------------------------------------------------------------- serving


async def test_concurrent_clients_all_get_answers(worker, peer):
    before = peer.stats()["batch_sizes"]
    clients = [WorkerClient(worker.address) for _ in range(6)]

    async def two_requests(i: int, c: WorkerClient) -> list[ResponseMsg]:
        return [await c.infill(PREFIX, "\n", doc_key=f"doc-{i}-{k}", deadline_s=20, **FAST) for k in range(2)]

    try:
        replies = [r for rs in await asyncio.gather(*(two_requests(i, c) for i, c in enumerate(clients)))
                   for r in rs]
    finally:
        for c in clients:
            c.close()
    assert len(replies) == 12 and len({r.id for r in replies}) == 12
    assert all(not r.cancelled and r.stats["nfe"] > 0 for r in replies)
    after = peer.stats()["batch_sizes"]
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert sum(k * v for k, v in new.items()) == 12
    assert max(new) > 1, f"six clients at once never shared a batch: {new}"


async def test_response_stats_and_status_cli(worker, client):
    reply = await client.infill(PREFIX, "\n", deadline_s=20, **FAST)
    for key in ("nfe", "tokens", "tokens_per_forward", "latency_ms", "model", "device", "batch_size"):
        assert key in reply.stats
    assert reply.stats["reused"] is False
    out = subprocess.run([sys.executable, "-m", "fim_server.cli", "status", "--connect", worker.address],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    for key in ("queue_depth", "served", "cancelled", "failed", "busy", "deadline_dropped", "reused",
                "latency_ms", "mean_nfe", "tokens_per_forward", "batch_sizes", "model", "device",
                "engine", "warmup_ms", "uptime_s"):
        assert key in stats, key
    assert stats["served"] >= 1 and stats["latency_ms"]["p50"] is not None
    from fim_server.models.loader import pick_dtype                    # the CPU default: auto
    assert stats["dtype"] == str(pick_dtype(torch.device("cpu"))).removeprefix("torch.")
    assert isinstance(stats["defaults"], dict)                          # the model's decoding defaults
    assert 0 < stats["default_context_tokens"] <= stats["context_tokens"]


def test_complete_cli_uses_the_worker(worker, tmp_path):
    (tmp_path / "p.py").write_text(PREFIX)
    out = subprocess.run([sys.executable, "-m", "fim_server.cli", "complete", "--connect", worker.address,
                          "--prefix-file", str(tmp_path / "p.py"), "--max-tokens", "8", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("completion", "nfe", "tokens", "tokens_per_forward", "engine", "latency_ms",
                "stop_reason", "model", "device", "random_weights"):
        assert key in result, key


def test_complete_cli_sends_an_engine_given_explicitly(worker, tmp_path):
    """--engine block is sent even though block is the default engine: this worker runs the
    canvas engine, so it answers with an error instead of silently using its own engine."""
    (tmp_path / "p.py").write_text(PREFIX)
    out = subprocess.run([sys.executable, "-m", "fim_server.cli", "complete", "--connect", worker.address,
                          "--prefix-file", str(tmp_path / "p.py"), "--max-tokens", "4", "--engine", "block"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "block" in out.stderr, out.stderr


async def test_reuse_when_typing_the_completion(worker, client):
    first = await client.infill(PREFIX, "\n", doc_key="reuse", deadline_s=20, **FAST)
    assert len(first.text) >= 2, "the random model must produce something to type"
    reused_before = (await client.stats())["reused"]
    typed = first.text[:1]
    second = await client.infill(PREFIX + typed, "\n", doc_key="reuse", deadline_s=20, **FAST)
    assert second.text == first.text[1:]
    assert second.stats["reused"] is True and second.stats["nfe"] == 0
    assert (await client.stats())["reused"] == reused_before + 1
    # a changed suffix is a different request: computed again
    third = await client.infill(PREFIX + typed, "\n\n", doc_key="reuse", deadline_s=20, **FAST)
    assert third.stats["reused"] is False and third.stats["nfe"] > 0


async def test_closing_a_document_frees_its_caches(worker, client):
    first = await client.infill(PREFIX, "\n", doc_key="closing", deadline_s=20, **FAST)
    assert len(first.text) >= 2, "the random model must produce something to type"
    held = (await client.stats())["kv_documents"]
    assert held >= 1
    await client.close_document("closing")
    assert (await client.stats())["kv_documents"] == held - 1      # its prompt KV is gone
    typed = await client.infill(PREFIX + first.text[:1], "\n", doc_key="closing", deadline_s=20, **FAST)
    assert typed.stats["reused"] is False and typed.stats["nfe"] > 0   # and so is its last completion


# ---------------------------------------------------------------- cancellation


async def test_latest_wins_stops_the_running_request(worker, client, peer):
    older = asyncio.ensure_future(client.infill(PREFIX, "\n", doc_key="typing", deadline_s=30, **SLOW))
    await asyncio.to_thread(peer.wait_for, lambda s: s["running"] == 1)
    newer = await client.infill(PREFIX + "a", "\n", doc_key="typing", deadline_s=20, **FAST)
    old = await asyncio.wait_for(older, 10)
    assert old.cancelled and old.stats["cancel_reason"] == "superseded"
    assert not newer.cancelled


async def test_two_editors_on_one_document_do_not_cancel_each_other(worker, client, peer):
    other = WorkerClient(worker.address)       # a second editor's language server: another socket
    medium = {"max_tokens": 160, "options": {**SLOW["options"], "block_size": 160}}
    try:
        first = asyncio.ensure_future(client.infill(PREFIX, "\n", doc_key="shared.py", deadline_s=60, **medium))
        await asyncio.to_thread(peer.wait_for, lambda s: s["running"] == 1)
        second = await other.infill(PREFIX + "a", "\n", doc_key="shared.py", deadline_s=60, **FAST)
        older = await asyncio.wait_for(first, 60)
        assert not older.cancelled and not second.cancelled     # the same client's newer request would supersede
    finally:
        other.close()


def test_latest_wins_answers_a_queued_request_at_once(worker, peer):
    peer.send(infill("run", doc_key="busy-doc", **SLOW))
    peer.wait_for(lambda s: s["running"] == 1)
    peer.send(infill("queued", doc_key="edited", **SLOW))
    peer.wait_for(lambda s: s["queue_depth"] == 1)
    peer.send(infill("latest", doc_key="edited", max_tokens=9, options={"length": "fixed"}))
    first = peer.recv()               # the superseded one, while "run" is still running
    assert (first.id, first.cancelled, first.stats["cancel_reason"]) == ("queued", True, "superseded")
    peer.send(encode_cancel(doc_key="busy-doc"))
    replies = {m.id: m for m in (peer.recv(), peer.recv())}
    assert replies["run"].cancelled and replies["run"].stats["cancel_reason"] == "cancelled"
    assert not replies["latest"].cancelled


async def test_cancel_by_id_and_by_task_cancellation(worker, client, peer):
    task = asyncio.ensure_future(client.infill(PREFIX, "\n", id="mine", deadline_s=30, **SLOW))
    await asyncio.to_thread(peer.wait_for, lambda s: s["running"] == 1)
    await client.cancel(id="mine")
    reply = await asyncio.wait_for(task, 10)
    assert reply.cancelled and reply.stats["cancel_reason"] == "cancelled"
    # cancelling the asyncio task sends a CancelMsg: the worker stops computing it
    cancelled_before = peer.stats()["cancelled"]
    task = asyncio.ensure_future(client.infill(PREFIX, "\n", deadline_s=30, **SLOW))
    await asyncio.to_thread(peer.wait_for, lambda s: s["running"] == 1)
    task.cancel()
    stats = await asyncio.to_thread(peer.wait_for, lambda s: s["running"] == 0 and s["queue_depth"] == 0)
    assert stats["cancelled"] == cancelled_before + 1
    # the cancelled request's reply reached the client after nobody waited for it: dropped,
    # and the next request gets its own reply
    reply = await client.infill(PREFIX, "\n", id="next", deadline_s=20, **FAST)
    assert reply.id == "next" and not reply.cancelled


def encode_cancel(**fields) -> bytes:
    from fim_server.wire.protocol import CancelMsg
    return encode(CancelMsg(**fields))


# ---------------------------------------------------------------- deadlines and errors


def test_deadlines(worker, peer):
    reply = peer.request(infill("late", timeout_ms=0))          # no budget left on arrival
    assert isinstance(reply, ErrorMsg) and reply.code is ErrorCode.deadline and reply.id == "late"
    # queued behind a slow request until after its deadline: dropped when dequeued, not computed
    dropped_before = peer.stats()["deadline_dropped"]
    peer.send(infill("slow", doc_key="hog", **SLOW))
    peer.wait_for(lambda s: s["running"] == 1)
    peer.send(infill("waits", timeout_ms=300, max_tokens=9, options={"length": "fixed"}))
    time.sleep(0.4)
    peer.send(encode_cancel(doc_key="hog"))
    replies = {m.id: m for m in (peer.recv(), peer.recv())}
    assert replies["slow"].cancelled
    assert isinstance(replies["waits"], ErrorMsg) and replies["waits"].code is ErrorCode.deadline
    assert peer.stats()["deadline_dropped"] == dropped_before + 1


async def test_deadline_stops_a_running_request(worker, client, peer):
    stopped_before = peer.stats()["deadline_stopped"]
    with pytest.raises(RequestFailed) as info:
        await client.infill(PREFIX, "\n", deadline_s=2.5, **SLOW)
    # an error reply (not WorkerUnavailable): the worker answered before the client gave up
    assert info.value.code is ErrorCode.deadline
    assert peer.stats()["deadline_stopped"] == stopped_before + 1


def test_bad_frames_get_error_replies_and_the_worker_keeps_serving(worker, peer):
    good = infill("ok")
    cases = [
        (os.urandom(64) + b"\xc1", ErrorCode.bad_request, None),                # 0xc1 is never valid msgpack
        (good[:-3], ErrorCode.bad_request, None),                                # truncated
        (msgpack.packb({"v": 99, "t": "infill", "id": "v99", "prefix": "", "suffix": ""}),
         ErrorCode.bad_version, "v99"),
        (b"\x00" * (MAX_FRAME_BYTES + 1), ErrorCode.too_large, None),
        (msgpack.packb({"v": 1, "t": "infill", "id": "types", "prefix": 5, "suffix": ""}),
         ErrorCode.bad_request, "types"),
        (msgpack.packb({"v": 1, "t": "infill", "id": "opt", "prefix": "", "suffix": "",
                        "options": {"threshold": "high"}}), ErrorCode.bad_request, "opt"),
        (msgpack.packb({"v": 1, "t": "infill", "id": "eng", "prefix": "", "suffix": "", "engine": "ar"}),
         ErrorCode.bad_request, "eng"),
        (encode(ResponseMsg(id="wrong-way", text="")), ErrorCode.bad_request, "wrong-way"),
    ]
    for payload, code, id in cases:
        reply = peer.request(payload)
        assert isinstance(reply, ErrorMsg) and reply.code is code and reply.id == id, (payload[:20], reply)
        assert not reply.retryable
    peer.sock.send_multipart([b"two", b"frames"])
    assert peer.recv().code is ErrorCode.bad_request
    reply = peer.request(good)
    assert isinstance(reply, ResponseMsg) and reply.id == "ok"


def test_a_client_chosen_context_is_capped_at_the_models_window(worker, peer):
    """context_tokens = 2^20 on a 1024-token model ran a 5,658-token prompt for seconds; the
    request now gets the model's own window."""
    msg = InfillMsg(id="huge", prefix="value = compute(1, 2)\n" * 2000, suffix="\n", max_tokens=8,
                    options={"context_tokens": 1 << 20, "length": "fixed"})
    reply = peer.request(encode(msg))
    assert isinstance(reply, ResponseMsg), reply
    assert reply.stats["truncated"] and 0 < reply.stats["prompt_tokens"] <= 1024 - 8


def test_a_middle_the_model_cannot_hold_is_refused_up_front(worker, peer):
    """Once an `internal` engine error mid-batch; now checked against the model before any work
    (an engine error still fails only its batch: the in-process tests below)."""
    refused_before = peer.stats()["bad_request"]
    reply = peer.request(infill("too-long", max_tokens=1100, options={}))   # larger than the context
    assert isinstance(reply, ErrorMsg) and reply.code is ErrorCode.bad_request and reply.id == "too-long"
    assert "max_tokens" in reply.message
    assert peer.stats()["bad_request"] == refused_before + 1
    assert isinstance(peer.request(infill("after")), ResponseMsg)


# ---------------------------------------------------------------- a dead engine (in process, a fake engine)


class FakeEngine:
    """Stands in for an engine whose batches raise: each call takes the next of `errors`, after
    `release` is set (so that a test can queue requests behind a running batch)."""

    kind = "diffusion"

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.release = threading.Event()
        self.release.set()
        self.calls = 0

    def infill(self, requests, config, should_stop=None):
        self.calls += 1
        assert self.release.wait(30)
        raise self.errors.pop(0)

    def check(self, config) -> None:
        pass

    def cached_documents(self) -> int:
        return 0

    def forget(self, doc_key: str) -> None:
        pass


class InProcessWorker:
    """A Worker serving `engine` on a thread of this process; `rc` once run() returned."""

    INFO = {"model": "fake", "family": "fake", "device": "cuda:0", "random_weights": True}

    def __init__(self, engine, sock_dir: str, clock=time.monotonic, **options):
        self.stop = threading.Event()
        self.worker = Worker(WorkerOptions(bind=f"ipc://{sock_dir}/in.sock", **options), self.stop, clock=clock)
        self.rc = None
        self.thread = threading.Thread(target=self._run, args=(engine,), daemon=True)
        self.thread.start()
        self.peer = RawPeer(self.worker.endpoint)

    def _run(self, engine) -> None:
        self.rc = self.worker.run(engine, self.INFO)

    def exit_status(self, timeout: float = 10) -> int | None:
        self.thread.join(timeout)
        return None if self.thread.is_alive() else self.rc

    def close(self) -> None:
        self.peer.close()
        self.stop.set()
        self.thread.join(10)


def test_engine_health_tells_a_failed_batch_from_a_dead_engine():
    import torch

    health = EngineHealth()
    assert not health.dead(ValueError("bad input")) and not health.dead(RuntimeError("shape mismatch"))
    for message in ("CUDA error: an illegal memory access was encountered",
                    "CUDA error: device-side assert triggered",
                    "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm`",
                    "NCCL error in: ProcessGroupNCCL.cpp, unhandled cuda error"):
        assert EngineHealth().dead(RuntimeError(message)), message
    if hasattr(torch, "AcceleratorError"):
        assert EngineHealth().dead(torch.AcceleratorError("CUDA error: unspecified launch failure"))
    wrapped = ValueError("decoding failed")
    wrapped.__cause__ = RuntimeError("CUDA error: misaligned address")
    assert EngineHealth().dead(wrapped)                          # the cause is what died
    # one out-of-memory is a failed batch (a long prompt, a big batch); a second in a row is not
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    health = EngineHealth()
    assert not health.dead(oom)
    health.ok()                                                  # a batch got through in between
    assert not health.dead(oom) and not health.dead(ValueError("bad input"))
    assert not health.dead(oom)
    assert health.dead(oom)


def test_a_lost_device_answers_everything_unavailable_and_exits_nonzero(sock_dir):
    engine = FakeEngine(RuntimeError("CUDA error: an illegal memory access was encountered"))
    engine.release.clear()
    w = InProcessWorker(engine, sock_dir, max_batch=1)
    try:
        w.peer.send(infill("running"))
        w.peer.wait_for(lambda s: s["running"] == 1)
        w.peer.send(infill("queued-1", doc_key="a"))
        w.peer.send(infill("queued-2", doc_key="b"))
        w.peer.wait_for(lambda s: s["queue_depth"] == 2)
        engine.release.set()
        replies = {m.id: m for m in (w.peer.recv(), w.peer.recv(), w.peer.recv())}
        assert set(replies) == {"running", "queued-1", "queued-2"}
        for reply in replies.values():
            assert isinstance(reply, ErrorMsg) and reply.code is ErrorCode.unavailable and reply.retryable
        assert "CUDA error" in replies["running"].message
        assert w.exit_status() == 1                          # a supervisor or fim-lsp starts a fresh one
        assert engine.calls == 1                             # nothing else reached the dead engine
    finally:
        w.close()


def test_a_failed_batch_is_internal_and_a_persisting_out_of_memory_is_fatal(sock_dir):
    import torch

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    w = InProcessWorker(FakeEngine(ValueError("cannot decode this"), oom, oom), sock_dir)
    try:
        for id, code in (("bug", ErrorCode.internal), ("oom-1", ErrorCode.internal),
                         ("oom-2", ErrorCode.unavailable)):
            reply = w.peer.request(infill(id))
            assert isinstance(reply, ErrorMsg) and (reply.id, reply.code) == (id, code), reply
            if code is ErrorCode.internal:
                assert w.exit_status(timeout=0) is None      # still serving
        assert w.exit_status() == 1
    finally:
        w.close()


# ---------------------------------------------------------------- leaving on its own


def test_idle_exit_decision():
    assert not idle_expired(now=5000.0, last_active=0.0, busy=False, idle_exit_s=0)       # 0: never
    assert not idle_expired(now=1059.9, last_active=1000.0, busy=False, idle_exit_s=60)
    assert idle_expired(now=1060.0, last_active=1000.0, busy=False, idle_exit_s=60)
    assert not idle_expired(now=9999.0, last_active=1000.0, busy=True, idle_exit_s=60)    # a request in hand


def test_parent_watch_sees_a_process_end():
    assert not Parent(os.getppid()).gone()
    assert not Parent(os.getpid()).gone()                   # not this process's parent: asked by pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert Parent(child.pid).gone()


def test_idle_worker_exits_by_its_clock(sock_dir):
    """The worker's clock is injected: no real waiting for the idle timeout."""
    now = [1000.0]
    w = InProcessWorker(FakeEngine(ValueError("cannot decode this")), sock_dir,
                        clock=lambda: now[0], idle_exit_s=60)
    try:
        now[0] = 1030.0
        assert w.peer.request(infill("request")).code is ErrorCode.internal    # activity: the timer restarts
        now[0] = 1089.0
        assert w.peer.stats()["queue_depth"] == 0            # a health probe is not activity
        assert w.exit_status(timeout=0) is None
        now[0] = 1090.0
        assert w.exit_status() == 0                          # a clean exit, as after SIGTERM
    finally:
        w.close()


def test_serve_refuses_bad_lifetime_flags(tiny_model):
    for flags, message in ((["--idle-exit", "-1"], "--idle-exit must not be negative"),
                           (["--parent-pid", "0"], "--parent-pid must be a process id")):
        out = subprocess.run([sys.executable, "-m", "fim_server.cli", "serve", "--model", str(tiny_model), *flags],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, out.stderr


# ---------------------------------------------------------------- busy, shutdown, crash


def test_busy_when_the_queue_is_full_then_sigterm_drains(tiny_model, sock_dir):
    w = WorkerProcess(tiny_model, f"ipc://{sock_dir}/q.sock", sock_dir, "--queue", "1", "--max-batch", "1")
    p = RawPeer(w.address)
    try:
        p.send(infill("a", **SLOW))
        p.wait_for(lambda s: s["running"] == 1)
        p.send(infill("b", **SLOW))
        p.wait_for(lambda s: s["queue_depth"] == 1)
        busy = p.request(infill("c", **SLOW))
        assert isinstance(busy, ErrorMsg) and busy.code is ErrorCode.busy and busy.retryable and busy.id == "c"
        w.proc.send_signal(signal.SIGTERM)
        replies = {m.id: m for m in (p.recv(), p.recv())}
        assert replies["a"].cancelled and replies["a"].stats["cancel_reason"] == "shutdown"
        assert replies["b"].cancelled and replies["b"].stats["cancel_reason"] == "shutdown"
        assert w.stop() == 0, w.log()
    finally:
        p.close()
        w.stop(signal.SIGKILL)


async def test_sigkill_gives_unavailable_and_a_restarted_worker_is_used(tiny_model, sock_dir):
    address = f"ipc://{sock_dir}/k.sock"
    first = WorkerProcess(tiny_model, address, sock_dir)
    client = WorkerClient(address)
    try:
        assert not (await client.infill(PREFIX, "\n", deadline_s=20, **FAST)).cancelled
        running = asyncio.ensure_future(client.infill(PREFIX, "\n", deadline_s=3.0, **SLOW))
        watcher = RawPeer(address)
        await asyncio.to_thread(watcher.wait_for, lambda s: s["running"] == 1)
        watcher.close()
        first.proc.kill()
        with pytest.raises(WorkerUnavailable):         # the client's own deadline, not a hang
            await running
        second = WorkerProcess(tiny_model, address, sock_dir)
        try:
            reply = await client.infill(PREFIX, "\n", deadline_s=20, **FAST)     # the same client
            assert not reply.cancelled and reply.stats["nfe"] > 0
        finally:
            assert second.stop() == 0, second.log()
    finally:
        client.close()
        first.stop(signal.SIGKILL)


# ---------------------------------------------------------------- security


def test_non_loopback_bind_without_keys_refuses_to_start(tiny_model):
    out = subprocess.run([sys.executable, "-m", "fim_server.cli", "serve", "--model", str(tiny_model),
                          "--bind", "tcp://0.0.0.0:5599"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "refusing to bind tcp://0.0.0.0:5599 without authentication" in out.stderr
    assert "ready" not in out.stdout


async def test_curve_admits_only_listed_clients(tiny_model, sock_dir):
    keys = Path(sock_dir)
    for name, where in (("worker", "server"), ("client", "clients"), ("stranger", "others")):
        out = subprocess.run([sys.executable, "-m", "fim_server.cli", "keys", "--out", str(keys / where),
                              "--name", name], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    # the directory of allowed keys holds public keys only
    allowed = keys / "allowed"
    allowed.mkdir()
    shutil.copy(keys / "clients" / "client.key", allowed)
    w = WorkerProcess(tiny_model, "tcp://127.0.0.1:*", sock_dir,
                      "--curve-secret-key", str(keys / "server" / "worker.key_secret"),
                      "--curve-public-keys", str(allowed))
    server_key = str(keys / "server" / "worker.key")
    try:
        async with WorkerClient(w.address, curve_server_key=server_key,
                                curve_secret_key=str(keys / "clients" / "client.key_secret")) as ok:
            assert not (await ok.infill(PREFIX, "\n", deadline_s=20, **FAST)).cancelled
        async with WorkerClient(w.address, curve_server_key=server_key,
                                curve_secret_key=str(keys / "others" / "stranger.key_secret")) as stranger:
            with pytest.raises(WorkerUnavailable):
                await stranger.infill(PREFIX, "\n", deadline_s=0.5, **FAST)
        async with WorkerClient(w.address) as plain:
            with pytest.raises(WorkerUnavailable):
                await plain.stats(deadline_s=0.5)
        assert w.stop() == 0, w.log()
    finally:
        w.stop(signal.SIGKILL)
