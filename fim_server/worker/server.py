"""The resident worker: one model, a ZeroMQ ROUTER socket, msgpack frames (fim_server.wire.protocol).

    clients (DEALER) --> ROUTER --socket thread--> Scheduler --compute thread--> engine.infill
                                      ^                                              |
                                      +------------ inproc PAIR (replies) <----------+

ZeroMQ sockets are not thread-safe, so exactly one thread (the main one) touches the ROUTER.
It decodes frames, answers what needs no model at once (errors, busy, cancellations, stats,
typed-ahead hits) and queues the rest. The compute thread takes micro-batches from the queue, runs
the engine, and hands each reply back over an inproc PAIR socket that it alone owns; the
socket thread forwards it. Every request gets exactly one reply (see scheduler.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import zmq

from fim_server.engine.types import InfillRequest
from fim_server.wire.addresses import DEFAULT_ADDRESS, tcp_host
from fim_server.wire.curve import serve_curve
from fim_server.wire.options import DecodeConfig, OptionError
from fim_server.wire.protocol import (
    MAX_FRAME_BYTES, RETRYABLE_CODES, CancelMsg, CloseMsg, ErrorCode, ErrorMsg, HealthMsg, InfillMsg,
    Msg, ProtocolError, ResponseMsg, StatsMsg, decode, encode, error_from, request_config,
)
from fim_server.wire.typed_ahead import TypedAhead

from .lifetime import EngineHealth, Parent, idle_expired
from .scheduler import DEADLINE, Job, Scheduler
from .stats import WorkerStats

log = logging.getLogger(__name__)

REPLY_PIPE = "inproc://fim-worker-replies"
DONE = b""                   # the compute thread's last message on the pipe: it has finished
POLL_MS = 50                 # how often the socket loop notices a stop request
DRAIN_S = 30.0               # how long shutdown waits for the running batch
LIFETIME_CHECK_S = 1.0       # how often the socket loop looks at the parent and the idle time
# Frames over this size make ZeroMQ drop the connection before buffering them. It is above
# the protocol limit so that an oversized frame up to here still gets a too_large reply.
MAX_WIRE_BYTES = 4 * MAX_FRAME_BYTES


@dataclass
class WorkerOptions:
    bind: str = DEFAULT_ADDRESS
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    queue: int = 64
    curve_secret_key: Optional[str] = None
    curve_public_keys: Optional[str] = None
    idle_exit_s: float = 0.0            # exit after this long without requests (0: never)
    parent_pid: Optional[int] = None    # exit when this process is gone


def error(id: Optional[str], code: ErrorCode, message: str) -> ErrorMsg:
    return ErrorMsg(id=id, code=code, message=message, retryable=code in RETRYABLE_CODES)


def cancelled(job: Job, stats: Optional[dict[str, Any]] = None) -> ResponseMsg:
    """A cancelled request is answered, not failed: empty text, cancelled=True, the reason."""
    return ResponseMsg(id=job.msg.id, text="", cancelled=True,
                       stats={**(stats or {}), "cancel_reason": job.stop_reason})


def frame(msg: Msg) -> bytes:
    """encode(), falling back to an internal error so that a reply always goes out."""
    try:
        return encode(msg)
    except ProtocolError as exc:
        return encode(error(getattr(msg, "id", None), ErrorCode.internal,
                            f"the reply could not be encoded: {exc.message}"))


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], Optional[bytes]]:
    """ROUTER frames -> (routing envelope, payload). DEALER peers send one payload frame; a
    REQ peer's empty delimiter is kept in the envelope. Any other shape has no payload."""
    identity, rest = parts[0], parts[1:]
    if len(rest) == 1:
        return [identity], rest[0]
    if len(rest) == 2 and rest[0] == b"":
        return [identity, b""], rest[1]
    return [identity], None


class ServeError(Exception):
    """The worker cannot start (address, keys or model): one line for the user."""


class Worker:
    def __init__(self, options: WorkerOptions, stop: threading.Event, clock: Callable[[], float] = time.monotonic):
        """Bind the sockets (before the model loads, so a bad address fails fast). `clock`
        times the idle exit (tests pass their own)."""
        self.options = options
        self.stop = stop
        self.clock = clock
        # looked at now, before the model loads: a parent that dies during the load is noticed
        self.parent = Parent(options.parent_pid) if options.parent_pid else None
        self.ctx = zmq.Context()
        self.auth = None
        try:
            self._bind()
        except (zmq.ZMQError, ValueError) as exc:
            if self.auth is not None:
                self.auth.stop()
            self.ctx.destroy(linger=0)
            raise ServeError(f"cannot serve on {options.bind}: {exc}") from None
        self.scheduler = Scheduler(options.queue, options.max_batch, options.batch_wait_ms / 1000, clock=clock)
        self.typed = TypedAhead()
        self.engine = None
        self.stats: Optional[WorkerStats] = None
        self.stopping = False
        self.compute_failed = False
        self.health = EngineHealth()
        self.dead: Optional[str] = None      # why the engine is dead (set by the compute thread)
        self.last_active = clock()

    def _bind(self) -> None:
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 2000            # let the last replies out at shutdown
        self.router.maxmsgsize = MAX_WIRE_BYTES
        if ":" in (tcp_host(self.options.bind) or ""):
            self.router.ipv6 = True
        if self.options.curve_secret_key:
            self.auth = serve_curve(self.ctx, self.router, self.options.curve_secret_key,
                                    self.options.curve_public_keys)
        self.router.bind(self.options.bind)
        self.endpoint = self.router.last_endpoint.decode()
        if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
            os.chmod(self.endpoint[len("ipc://"):], 0o600)   # only this user may connect
        self.pipe = self.ctx.socket(zmq.PAIR)
        self.pipe.bind(REPLY_PIPE)

    # ---------------------------------------------------------------- lifecycle

    def run(self, engine, info: dict[str, Any], base: Optional[DecodeConfig] = None) -> int:
        """Serve until self.stop is set, then drain. Returns the exit status. `base`: the options
        every request starts from (engine.default_config(): the family's published defaults)."""
        self.engine = engine
        self.base = base or DecodeConfig(engine=engine.kind)
        self.stats = WorkerStats({**info, "bind": self.endpoint, "max_batch": self.options.max_batch,
                                  "queue_limit": self.options.queue,
                                  "batch_wait_ms": self.options.batch_wait_ms,
                                  "curve": self.auth is not None})
        self.reply_fields = {k: info[k] for k in ("model", "family", "device", "random_weights")}
        self.last_active = self.clock()
        compute = threading.Thread(target=self._compute_loop, name="fim-compute", daemon=True)
        compute.start()
        print(f"ready {self.endpoint}", flush=True)
        log.info("ready %s", self.endpoint)
        drained = self._socket_loop()
        # after a drain timeout the compute thread still holds its socket and term() would
        # wait for it forever; it is a daemon thread, so exiting the process ends it
        self.close(term=drained)
        log.info("stopped (%s)", "drained" if drained else "drain timed out")
        return 0 if drained and not self.compute_failed and self.dead is None else 1

    def close(self, term: bool = True) -> None:
        self.pipe.close(linger=0)
        self.router.close()
        if self.auth is not None:
            self.auth.stop()
        if term:
            self.ctx.term()

    # ---------------------------------------------------------------- socket thread

    def _socket_loop(self) -> bool:
        """Serve; after a stop request keep forwarding until the compute thread is done.
        True when it finished draining, False when the drain timed out."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pipe, zmq.POLLIN)
        drain_until = None
        next_check = self.clock()
        while True:
            if not self.stopping and self.clock() >= next_check:
                next_check = self.clock() + LIFETIME_CHECK_S
                reason = self._exit_reason()
                if reason is not None:
                    log.info("%s: exiting", reason)
                    self.stop.set()
            if self.stop.is_set() and not self.stopping:
                self._begin_shutdown()
                drain_until = time.monotonic() + DRAIN_S
            events = dict(poller.poll(POLL_MS))
            if self.pipe in events and self._forward_replies():
                return True
            if self.router in events:
                self._receive()
            if drain_until is not None and time.monotonic() > drain_until:
                log.error("shutdown: the running batch did not stop within %.0f s", DRAIN_S)
                return False

    def _exit_reason(self) -> Optional[str]:
        """Why the worker should stop on its own now (its parent is gone, it is idle), or None."""
        if self.parent is not None and self.parent.gone():
            return f"the parent process {self.parent.pid} is gone"
        busy = self.scheduler.depth() != (0, 0)
        if idle_expired(self.clock(), self.last_active, busy, self.options.idle_exit_s):
            return f"no request for {self.options.idle_exit_s:g} s (--idle-exit)"
        return None

    def _begin_shutdown(self) -> None:
        log.info("shutting down: answering queued and running requests")
        self.stopping = True
        for job in self.scheduler.close():      # queued ones now; running ones stop between steps
            if self.dead is not None:           # retryable: another worker can answer them
                self._send(job.envelope, error(job.msg.id, ErrorCode.unavailable, self.dead))
            else:
                self._cancelled(job)

    def _forward_replies(self) -> bool:
        """Compute-thread replies -> ROUTER. True once the compute thread said it is done."""
        while True:
            try:
                parts = self.pipe.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            if parts == [DONE]:
                if not self.stopping:        # the compute thread died: answer what is queued
                    self._begin_shutdown()
                return True
            self.last_active = self.clock()
            self.router.send_multipart(parts)

    def _receive(self, limit: int = 256) -> None:
        for _ in range(limit):         # bounded, so replies are forwarded in between
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                self._handle(parts)
            except Exception:             # a bug in one reply must not take the worker down
                log.exception("failed to handle a request")
                self.stats.count("failed")
                self.router.send_multipart([parts[0], frame(error(None, ErrorCode.internal, "internal error"))])

    def _send(self, envelope: list[bytes], msg: Msg) -> None:
        self.router.send_multipart([*envelope, frame(msg)])

    def _handle(self, parts: list[bytes]) -> None:
        envelope, payload = split_envelope(parts)
        if payload is None:
            self.stats.count("bad_request")
            return self._send(envelope, error(None, ErrorCode.bad_request,
                                              "a request is exactly one msgpack frame"))
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            self.stats.count("bad_request")
            return self._send(envelope, error_from(exc))
        if isinstance(msg, InfillMsg):
            return self._on_infill(envelope, msg)
        if isinstance(msg, CancelMsg):
            for job in self.scheduler.cancel(envelope[0], msg.id, msg.doc_key):
                self._cancelled(job)
            return None
        if isinstance(msg, CloseMsg):
            return self._on_close(envelope, msg)
        if isinstance(msg, HealthMsg):
            stats = {**self.stats.snapshot(*self.scheduler.depth()),
                     "kv_documents": self.engine.cached_documents()}
            return self._send(envelope, StatsMsg(id=msg.id, stats=stats))
        self.stats.count("bad_request")
        self._send(envelope, error(getattr(msg, "id", None), ErrorCode.bad_request,
                                   f"a worker takes infill, cancel, close and health messages, "
                                   f"not {type(msg).__name__}"))

    def _on_close(self, envelope: list[bytes], msg: CloseMsg) -> None:
        """A closed document: stop this client's requests for it, free its typed-ahead text and
        the prompt KV the engine kept for it (both stores are thread-safe)."""
        for job in self.scheduler.cancel(envelope[0], None, msg.doc_key):
            self._cancelled(job)
        self.typed.forget(msg.doc_key)
        self.engine.forget(msg.doc_key)

    def _on_infill(self, envelope: list[bytes], msg: InfillMsg) -> None:
        self.last_active = self.clock()
        if self.stopping:
            return self._send(envelope, error(msg.id, ErrorCode.unavailable, "the worker is shutting down"))
        try:
            config = self._config(msg)
        except ProtocolError as exc:
            self.stats.count("bad_request")
            return self._send(envelope, error_from(exc, msg.id))
        job = Job(envelope=envelope, msg=msg, config=config, received=self.clock())
        if msg.doc_key is not None:
            for old in self.scheduler.supersede(envelope[0], msg.doc_key):      # latest wins, per client
                self._cancelled(old)
        if job.expired(self.clock()):
            self.stats.count("deadline_dropped")
            return self._send(envelope, error(msg.id, ErrorCode.deadline, "the deadline passed before it was queued"))
        if msg.doc_key is not None and self._answer_typed_ahead(job):
            return None
        if not self.scheduler.submit(job):
            self.stats.count("busy")
            self._send(envelope, error(msg.id, ErrorCode.busy,
                                       f"the queue is full ({self.options.queue} waiting); retry later"))

    def _config(self, msg: InfillMsg) -> DecodeConfig:
        config = request_config(msg, self.base)
        if config.engine != self.engine.kind:
            raise ProtocolError(ErrorCode.bad_request,
                                f"this worker runs the {self.engine.kind} engine, not {config.engine}", msg.id)
        try:
            self.engine.check(config)            # what fits this model: checked here, not mid-batch
        except OptionError as exc:
            raise ProtocolError(ErrorCode.bad_request, f"bad decoding option: {exc}", msg.id) from None
        return config

    def _answer_typed_ahead(self, job: Job) -> bool:
        msg = job.msg
        rest = self.typed.lookup(msg.doc_key, msg.prefix, msg.suffix, tag=job.config)
        if rest is None:
            return False
        latency_ms = round((self.clock() - job.received) * 1000, 3)
        self.stats.served(latency_ms, None)
        stats = {**self.reply_fields, "engine": self.engine.kind, "reused": True, "nfe": 0,
                 "tokens": 0, "tokens_per_forward": 0.0, "latency_ms": latency_ms,
                 "stop_reason": "reused", "batch_size": 0}
        self._send(job.envelope, ResponseMsg(id=msg.id, text=rest, stats=stats))
        return True

    def _cancelled(self, job: Job) -> None:
        self.stats.count("cancelled")
        self._send(job.envelope, cancelled(job))

    # ---------------------------------------------------------------- compute thread

    def _compute_loop(self) -> None:
        pipe = self.ctx.socket(zmq.PAIR)     # this thread's own socket: replies go through it
        pipe.connect(REPLY_PIPE)
        try:
            while True:
                batch, expired = self.scheduler.next_batch(timeout_s=0.25)
                for job in expired:
                    self.stats.count("deadline_dropped")
                    self._pipe_send(pipe, job, error(job.msg.id, ErrorCode.deadline,
                                                     "the deadline passed while it was queued"))
                if batch is None:
                    break
                if batch:
                    self._run_batch(pipe, batch)
                if self.dead is not None:    # the socket thread answers what is queued
                    self.stop.set()
                    break
        except Exception:                    # a bug here must not leave the worker silently deaf
            log.exception("compute thread failed")
            self.compute_failed = True
            self.stop.set()
        finally:
            pipe.send(DONE)
            pipe.close(linger=-1)

    def _pipe_send(self, pipe: zmq.Socket, job: Job, msg: Msg) -> None:
        pipe.send_multipart([*job.envelope, frame(msg)])

    def _run_batch(self, pipe: zmq.Socket, batch: list[Job]) -> None:
        self.stats.batch(len(batch))
        requests = [InfillRequest(j.msg.prefix, j.msg.suffix, j.msg.id, key=j.msg.doc_key or "") for j in batch]
        try:
            results = self.engine.infill(requests, batch[0].config, self.scheduler.should_stop(batch))
            self.health.ok()
            replies = [self._reply(job, result, len(batch)) for job, result in zip(batch, results)]
        except Exception as exc:
            self.stats.count("failed", len(batch))
            what = f"{type(exc).__name__}: {exc}"[:2000]
            if self.health.dead(exc):        # the device is lost: every later batch would fail too
                self.dead = f"the engine is dead ({what}); the worker is exiting"
                log.critical("engine dead, answering everything `unavailable` and exiting: %s", what, exc_info=exc)
                code = ErrorCode.unavailable
            else:                            # one bad batch fails its requests, not the worker
                log.exception("engine failed on a batch of %d", len(batch))
                code = ErrorCode.internal
            replies = [error(j.msg.id, code, self.dead or f"engine error: {what}") for j in batch]
        self.scheduler.finish(batch)
        for job, reply in zip(batch, replies):
            self._pipe_send(pipe, job, reply)

    def _reply(self, job: Job, result, batch_size: int) -> Msg:
        engine_stats = result.stats.to_dict()
        if job.stop_reason == DEADLINE:
            self.stats.count("deadline_stopped")
            return error(job.msg.id, ErrorCode.deadline,
                         f"the deadline passed after {engine_stats['steps']} steps")
        if job.stop_reason is not None:
            self.stats.count("cancelled")
            return cancelled(job, engine_stats)
        latency_ms = round((self.clock() - job.received) * 1000, 3)
        self.stats.served(latency_ms, engine_stats)
        if job.msg.doc_key is not None:
            self.typed.remember(job.msg.doc_key, job.msg.prefix, job.msg.suffix, result.text, tag=job.config)
        stats = {**engine_stats, **self.reply_fields, "reused": False, "batch_size": batch_size,
                 "engine_latency_ms": engine_stats["latency_ms"], "latency_ms": latency_ms}
        return ResponseMsg(id=job.msg.id, text=result.text, stats=stats)


# -------------------------------------------------------------------- entry point


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT ask for a graceful stop; the socket loop notices within POLL_MS."""
    def handler(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(options: WorkerOptions, model: str, kind: str, device: Optional[str] = None,
          dtype: Optional[str] = None, family: Optional[str] = None, random_weights: bool = False,
          ar_model: Optional[str] = None) -> int:
    """Bind, load and warm the engine, print `ready <endpoint>`, serve until SIGTERM/SIGINT."""
    stop = threading.Event()
    install_signal_handlers(stop)
    worker = Worker(options, stop)
    try:
        from fim_server.engine import load_engine

        t0 = time.perf_counter()
        engine = load_engine(kind, model, device=device, dtype=dtype, family=family, ar_model=ar_model)
        load_ms = (time.perf_counter() - t0) * 1000
        log.info("loaded %s (%s engine) on %s in %.0f ms", engine.lm.source, kind, engine.lm.device, load_ms)
        warmup_ms = engine.warmup() * 1000
        log.info("warm-up took %.0f ms", warmup_ms)
    except (OSError, ValueError) as exc:
        worker.close()
        raise ServeError(f"cannot load model {model or 'bundled'}: {exc}") from None
    except BaseException:
        worker.close()
        raise
    info = {"model": engine.lm.source, "family": engine.lm.family.name, "device": str(engine.lm.device),
            "dtype": str(engine.lm.dtype).removeprefix("torch."), "engine": kind, "random_weights": random_weights, "load_ms": round(load_ms, 1),
            "warmup_ms": round(warmup_ms, 1), "context_tokens": engine.lm.context_tokens,
            "default_context_tokens": engine.lm.default_context_tokens or engine.lm.context_tokens}
    base = engine.default_config()
    plain = DecodeConfig(engine=kind).to_dict()
    info["defaults"] = {k: v for k, v in base.to_dict().items() if v != plain[k]}   # the family's, as given
    return worker.run(engine, info, base)
