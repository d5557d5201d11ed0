"""Client of the resident worker: asyncio, one DEALER socket, msgpack frames.

    client = WorkerClient("ipc:///tmp/fim.sock")
    reply = await client.infill("def add(a, b):\\n    return ", "\\n", doc_key="file:///a.py")
    reply.text, reply.stats, reply.cancelled

Every request has an id and a deadline. One reader task routes replies to their waiting
request by id; a reply nobody waits for any more (a request that gave up) is dropped.
Retryable errors (busy, unavailable) are retried with exponential backoff while the deadline
allows. When no reply comes in time the socket is closed and a fresh one made on the next
call (the "Lazy Pirate" pattern): a worker that was restarted on the same address is then
picked up without restarting the client.

Errors: RequestFailed(code, message) for an error reply; WorkerUnavailable when nothing came
back in time. A cancelled request is not an error: its ResponseMsg has cancelled=True.
No torch here; the language server imports this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any, Optional

import zmq
import zmq.asyncio

from .protocol import (
    CancelMsg, CloseMsg, ErrorCode, ErrorMsg, HealthMsg, InfillMsg, Msg, ProtocolError, ResponseMsg,
    StatsMsg, decode, encodable, encode,
)

log = logging.getLogger(__name__)


class WorkerUnavailable(Exception):
    """No reply within the deadline (the worker is down, stuck or unreachable)."""


class RequestFailed(Exception):
    """The worker answered with an error."""

    def __init__(self, code: ErrorCode, message: str, retryable: bool = False):
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class _SocketReset(Exception):
    """The socket a request was sent on was replaced; its reply can no longer arrive."""


def worker_timeout_ms(deadline_s: float) -> float:
    """The time budget sent to the worker, relative to its receipt (no shared wall clock): a
    little less than the client's own, so that a worker that is alive but too slow answers
    `deadline` before the client gives up on it."""
    margin = min(0.25, deadline_s * 0.1)
    return (deadline_s - margin) * 1000.0


class WorkerClient:
    def __init__(self, address: str, *, curve_server_key: Optional[str] = None,
                 curve_secret_key: Optional[str] = None, retries: int = 3, backoff_s: float = 0.05,
                 context: Optional[zmq.asyncio.Context] = None):
        """curve_server_key: the worker's public key file; curve_secret_key: this client's
        .key_secret file. Both or neither."""
        if (curve_server_key is None) != (curve_secret_key is None):
            raise ValueError("curve_server_key and curve_secret_key go together")
        self.address = address
        self.retries = retries
        self.backoff_s = backoff_s
        self._curve = (curve_server_key, curve_secret_key) if curve_server_key else None
        self._ctx = context or zmq.asyncio.Context.instance()
        self._socket: Optional[zmq.asyncio.Socket] = None
        self._reader: Optional[asyncio.Task] = None
        self._pending: dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8]     # ids stay distinct across clients' logs
        self._closed = False

    # ---------------------------------------------------------------- public

    async def infill(self, prefix: str, suffix: str, doc_key: Optional[str] = None,
                     options: Optional[dict[str, Any]] = None, max_tokens: Optional[int] = None,
                     single_line: Optional[bool] = None, deadline_s: float = 2.0,
                     id: Optional[str] = None) -> ResponseMsg:
        """Complete the middle. `id` (default: a fresh one) is what cancel(id=...) names."""
        prefix, suffix = encodable(prefix), encodable(suffix)
        msg = InfillMsg(id=id or self._new_id(), prefix=prefix, suffix=suffix, doc_key=doc_key,
                        options=dict(options or {}), max_tokens=max_tokens, single_line=single_line,
                        timeout_ms=worker_timeout_ms(deadline_s))
        try:
            return await self._call(msg, deadline_s)
        except asyncio.CancelledError:
            self._send_nowait(CancelMsg(id=msg.id))     # the caller gave up: free the worker too
            raise

    async def cancel(self, id: Optional[str] = None, doc_key: Optional[str] = None) -> None:
        """Ask the worker to drop a request (this client's id) or all requests of a document.
        No reply of its own: the cancelled request is answered with cancelled=True."""
        await self._send_one(CancelMsg(id=id, doc_key=doc_key))

    async def close_document(self, doc_key: str) -> None:
        """The document was closed: the worker stops this client's requests for it and frees
        what it cached for it (prompt KV, the last completion). No reply."""
        await self._send_one(CloseMsg(doc_key=doc_key))

    async def stats(self, deadline_s: float = 2.0) -> dict[str, Any]:
        reply = await self._call(HealthMsg(id=self._new_id()), deadline_s)
        if not isinstance(reply, StatsMsg):
            raise RequestFailed(ErrorCode.internal, f"expected stats, got {type(reply).__name__}")
        return reply.stats

    def close(self) -> None:
        """Close the client (not a document: see close_document)."""
        self._closed = True
        self._reset(WorkerUnavailable("the client was closed"))

    async def __aenter__(self) -> "WorkerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- request / reply

    async def _send_one(self, msg: Msg) -> None:
        """Send a message that has no reply of its own."""
        self._check_open()
        self._ensure_socket()
        await asyncio.wait_for(self._socket.send(encode(msg)), 1.0)

    async def _call(self, msg: Msg, deadline_s: float) -> Msg:
        """Send msg and wait for its reply, retrying retryable errors within deadline_s."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WorkerUnavailable(f"no reply from {self.address} within {deadline_s:.3g} s")
            try:
                reply = await self._round_trip(msg, remaining, deadline_s)
            except _SocketReset:
                continue                       # another request reset the socket: send again
            if not isinstance(reply, ErrorMsg):
                return reply
            delay = self.backoff_s * 2 ** attempt
            if reply.retryable and attempt < self.retries and loop.time() + delay < deadline:
                attempt += 1
                await asyncio.sleep(delay)
                continue
            raise RequestFailed(reply.code, reply.message, reply.retryable)

    async def _round_trip(self, msg: Msg, timeout: float, deadline_s: float) -> Msg:
        self._ensure_socket()
        future = asyncio.get_running_loop().create_future()
        self._pending[msg.id] = future
        try:
            await asyncio.wait_for(self._socket.send(encode(msg)), timeout)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._reset(_SocketReset())        # Lazy Pirate: the next call connects afresh
            raise WorkerUnavailable(f"no reply from {self.address} within {deadline_s:.3g} s") from None
        finally:
            if self._pending.get(msg.id) is future:
                del self._pending[msg.id]

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        """Route each reply to the request waiting for its id; drop the rest."""
        while True:
            try:
                parts = await sock.recv_multipart()
            except zmq.ZMQError:
                return                          # the socket was closed
            try:
                msg = decode(parts[-1])
            except ProtocolError as exc:
                log.warning("dropping an undecodable reply: %s", exc)
                continue
            future = self._pending.get(getattr(msg, "id", None) or "")
            if future is None or future.done():
                log.debug("dropping a stale reply (id %s)", getattr(msg, "id", None))
                continue
            future.set_result(msg)

    # ---------------------------------------------------------------- socket life

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the WorkerClient is closed")

    def _ensure_socket(self) -> None:
        if self._socket is not None:
            return
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0                         # never block close() on unsent requests
        if self._curve:
            from .curve import client_curve
            client_curve(sock, *self._curve)
        sock.connect(self.address)
        self._socket = sock
        self._reader = asyncio.ensure_future(self._read(sock))

    def _reset(self, reason: Exception) -> None:
        """Close the socket; requests still waiting on it get `reason` (and resend if they can)."""
        sock, reader, pending = self._socket, self._reader, self._pending
        self._socket, self._reader, self._pending = None, None, {}
        if reader is not None:
            reader.cancel()
        if sock is not None:
            sock.close(linger=0)
        for future in pending.values():
            if not future.done():
                future.set_exception(reason)

    def _send_nowait(self, msg: Msg) -> None:
        """Best-effort send that needs no await (used while being cancelled)."""
        if self._socket is None:
            return
        sent = self._socket.send(encode(msg), zmq.NOBLOCK)
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())   # never "unretrieved"


class SyncWorkerClient:
    """Blocking wrapper for scripts and the CLI: the same calls, run on a private event loop."""

    def __init__(self, address: str, **kwargs: Any):
        self._loop = asyncio.new_event_loop()
        self._client = WorkerClient(address, **kwargs)

    def infill(self, prefix: str, suffix: str, **kwargs: Any) -> ResponseMsg:
        return self._loop.run_until_complete(self._client.infill(prefix, suffix, **kwargs))

    def stats(self, deadline_s: float = 2.0) -> dict[str, Any]:
        return self._loop.run_until_complete(self._client.stats(deadline_s))

    def close(self) -> None:
        self._client.close()
        self._loop.run_until_complete(asyncio.sleep(0))     # let the reader task see its cancel
        self._loop.close()

    def __enter__(self) -> "SyncWorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
