"""The worker's request queue: bounded, latest-wins per document, deadlines, micro-batches.

Two threads share one Scheduler: the socket thread submits and cancels, the compute thread
takes micro-batches and asks, between denoising steps, which running rows must stop. All
state sits behind one lock; nothing here touches a socket, so it is testable on its own.

A job leaves the queue in exactly one of these ways, which is what guarantees that every
request gets exactly one answer:
  * supersede / cancel / close remove it and hand it back to the caller to answer;
  * next_batch hands it out either as expired (answer deadline) or in a batch (compute,
    then answer, then finish()).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from fim_server.wire.options import DecodeConfig
from fim_server.wire.protocol import InfillMsg

# Why a running job was stopped; None while it should run to the end.
SUPERSEDED = "superseded"   # a newer request for the same document arrived
CANCELLED = "cancelled"     # an explicit CancelMsg
SHUTDOWN = "shutdown"       # the worker is stopping
DEADLINE = "deadline"       # its deadline passed


Clock = Callable[[], float]          # monotonic seconds; tests inject their own
PEERS_S = 5.0                        # another client sent within this long: batch mates may come


@dataclass(eq=False)
class Job:
    envelope: list[bytes]           # ROUTER routing frames: the reply goes back with them
    msg: InfillMsg
    config: DecodeConfig
    received: float                 # the scheduler's clock when the request arrived
    stop_reason: Optional[str] = None

    @property
    def client(self) -> bytes:
        return self.envelope[0]

    @property
    def deadline(self) -> Optional[float]:
        """When the request's time budget (timeout_ms, relative: no shared wall clock) runs out."""
        timeout = self.msg.timeout_ms
        return None if timeout is None else self.received + timeout / 1000.0

    def expired(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def matches(self, client: bytes, id: Optional[str], doc_key: Optional[str]) -> bool:
        """A client's own request, by id or by document (two editors on one file share a
        doc_key but not a client: neither cancels the other)."""
        by_id = id is not None and self.msg.id == id
        by_doc = doc_key is not None and self.msg.doc_key == doc_key
        return self.client == client and (by_id or by_doc)


class Scheduler:
    def __init__(self, limit: int, max_batch: int, batch_wait_s: float, clock: Clock = time.monotonic):
        self.clock = clock
        self.limit = limit
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._closed = False
        self._last_client: Optional[bytes] = None
        self._peers_at = float("-inf")     # when a request last came from another client than the one before
        self._cond = threading.Condition()

    # ---------------------------------------------------------------- socket thread

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full (or closed): the caller answers busy."""
        with self._cond:
            if self._closed or len(self._pending) >= self.limit:
                return False
            if self._last_client is not None and job.client != self._last_client:
                self._peers_at = self.clock()
            self._last_client = job.client
            self._pending.append(job)
            self._cond.notify()
            return True

    def supersede(self, client: bytes, doc_key: str) -> list[Job]:
        """Latest wins: stop this client's jobs for this document; returns the queued ones, now removed."""
        return self._stop(lambda j: j.matches(client, None, doc_key), SUPERSEDED)

    def cancel(self, client: bytes, id: Optional[str], doc_key: Optional[str]) -> list[Job]:
        """Explicit cancel (by this client's request id and/or a document); queued ones returned."""
        return self._stop(lambda j: j.matches(client, id, doc_key), CANCELLED)

    def close(self) -> list[Job]:
        """Stop taking jobs: returns the queued ones (removed) and stops the running ones."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return self._stop(lambda j: True, SHUTDOWN)

    def depth(self) -> tuple[int, int]:
        """(queued, running)."""
        with self._cond:
            return len(self._pending), len(self._running)

    def _stop(self, match, reason: str) -> list[Job]:
        with self._cond:
            removed = [j for j in self._pending if match(j)]
            for job in removed:
                self._pending.remove(job)
                job.stop_reason = reason
            for job in self._running:
                if job.stop_reason is None and match(job):
                    job.stop_reason = reason     # seen by should_stop between steps
            return removed

    # ---------------------------------------------------------------- compute thread

    def next_batch(self, timeout_s: float) -> tuple[Optional[list[Job]], list[Job]]:
        """(batch, expired). The batch shares one DecodeConfig and is [] when nothing came
        within timeout_s; it is None once the scheduler is closed and drained. Expired jobs
        were past their deadline when dequeued: the caller answers them, it does not compute."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending or self._closed, timeout_s):
                return [], []
            if not self._pending:
                return None, []
            self._gather(self._pending[0])
            if not self._pending:            # the jobs we waited for were cancelled meanwhile
                return [], []
            config = self._pending[0].config
            taken = [j for j in self._pending if j.config == config][:self.max_batch]
            for job in taken:
                self._pending.remove(job)
            at = self.clock()
            expired = [j for j in taken if j.expired(at)]
            batch = [j for j in taken if not j.expired(at)]
            self._running.extend(batch)
            return batch, expired

    def _gather(self, first: Job) -> None:
        """Wait (lock held, released while waiting) until max_batch jobs share first's config
        or batch_wait_s has passed since first arrived: requests that arrive together batch.
        Only while several clients send: one client's requests supersede each other per
        document, so a lone client (an editor's own worker) would only wait for nothing."""
        if self.clock() - self._peers_at > PEERS_S:
            return
        until = first.received + self.batch_wait_s

        def enough() -> bool:
            same = sum(1 for j in self._pending if j.config == first.config)
            return self._closed or first not in self._pending or same >= self.max_batch

        remaining = until - self.clock()
        if remaining > 0:
            self._cond.wait_for(enough, remaining)

    def should_stop(self, batch: list[Job]):
        """The engine's ShouldStop for this batch: rows cancelled, superseded or past deadline."""
        def check(running: list[int]) -> set[int]:
            at = self.clock()
            stop = set()
            with self._cond:
                for i in running:
                    job = batch[i]
                    if job.stop_reason is None and job.expired(at):
                        job.stop_reason = DEADLINE
                    if job.stop_reason is not None:
                        stop.add(i)
            return stop
        return check

    def finish(self, batch: list[Job]) -> None:
        """The batch is answered: forget it."""
        with self._cond:
            self._running = [j for j in self._running if j not in batch]
