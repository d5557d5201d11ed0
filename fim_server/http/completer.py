"""The one path from any API's request to the worker, and the rules every API shares:

* identical concurrent requests (same prefix, suffix and decoding options) are served by one
  worker computation; each request applies its own stop strings and indentation cut to it;
* per client the newest request wins: a client's older request still waiting is answered at once
  with an empty middle, and its computation is cancelled when nobody else waits for it (the worker
  also supersedes it: each client sends its own `doc_key`);
* a request whose client disconnects (aiohttp cancels its handler) leaves its computation, which
  is cancelled in the worker (a CancelMsg) once nobody waits for it;
* n choices: one computation when greedy, else n requests seeded seed, seed+1, ... (the worker
  batches requests that arrive together).

A client is what sends the request: the API family, its address, its User-Agent, a hash of its
credentials and, when the API names one, the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from fim_server.wire.client import RequestFailed, WorkerUnavailable
from fim_server.wire.protocol import ErrorCode, ResponseMsg

from .body import HttpError
from .job import Completion, FimJob, post_filter
from .worker import WorkerLink

Outcome = Union[ResponseMsg, HttpError]
SUPERSEDED = ResponseMsg(id="-", text="", cancelled=True, stats={"stop_reason": "superseded"})
LENGTH_REASONS = ("length", "steps", "deadline")
ERROR_STATUS = {ErrorCode.bad_request: 400, ErrorCode.too_large: 413, ErrorCode.busy: 503,
                ErrorCode.unavailable: 503}


def doc_key(client: str) -> str:
    return "http:" + hashlib.sha256(client.encode("utf-8", "replace")).hexdigest()[:20]


@dataclass(eq=False)
class Waiter:
    client: str
    future: asyncio.Future
    inflight: "Inflight"


@dataclass(eq=False)
class Inflight:
    job: FimJob
    doc_key: str
    waiters: set = field(default_factory=set)
    task: Optional[asyncio.Task] = None


class Completer:
    def __init__(self, link: WorkerLink):
        self.link = link
        self.stats: Counter = Counter({k: 0 for k in (
            "requests", "answered", "computed", "joined", "superseded", "disconnected", "deadline", "worker_errors")})
        self._inflight: dict[tuple, Inflight] = {}
        self._latest: dict[str, Waiter] = {}

    async def complete(self, job: FimJob, client: str) -> list[Completion]:
        """The job's n choices (post-filtered). Raises HttpError for what is no completion."""
        self.stats["requests"] += 1
        answers = await self._choices(job, client)
        self.stats["answered"] += 1
        return answers

    async def _choices(self, job: FimJob, client: str) -> list[Completion]:
        if job.n == 1 or job.decoding.temperature == 0:
            reply = await self._one(job, client)
            return [self._completion(reply, job)] * job.n
        seed = dict(job.decoding.options).get("seed", 0)
        jobs = [dataclasses.replace(job, decoding=dataclasses.replace(
            job.decoding, options=tuple(sorted({**dict(job.decoding.options), "seed": seed + i}.items()))))
            for i in range(job.n)]
        replies = await asyncio.gather(*(self._one(j, client if i == 0 else f"{client}#{i}")
                                         for i, j in enumerate(jobs)))
        return [self._completion(r, job) for r in replies]

    # ---------------------------------------------------------------- one computation, many waiters

    async def _one(self, job: FimJob, client: str) -> ResponseMsg:
        inflight = self._inflight.get(job.key)
        if inflight is None:
            inflight = Inflight(job, doc_key(client))
            inflight.task = asyncio.ensure_future(self._run(inflight))
            self._inflight[job.key] = inflight
            self.stats["computed"] += 1
        else:
            self.stats["joined"] += 1
        waiter = Waiter(client, asyncio.get_running_loop().create_future(), inflight)
        inflight.waiters.add(waiter)
        older, self._latest[client] = self._latest.get(client), waiter
        if older is not None and older.inflight is not inflight and not older.future.done():
            self.stats["superseded"] += 1
            self._leave(older, SUPERSEDED)
        try:
            outcome = await waiter.future
        except asyncio.CancelledError:
            self.stats["disconnected"] += 1
            self._leave(waiter, None)
            raise
        finally:
            if self._latest.get(client) is waiter:
                del self._latest[client]
        if isinstance(outcome, HttpError):
            raise outcome
        return outcome

    def _leave(self, waiter: Waiter, outcome: Optional[Outcome]) -> None:
        """The waiter stops waiting (answered with `outcome` unless it is gone); a computation
        nobody waits for any more is cancelled."""
        inflight = waiter.inflight
        inflight.waiters.discard(waiter)
        if outcome is not None and not waiter.future.done():
            waiter.future.set_result(outcome)
        if not inflight.waiters and inflight.task is not None and not inflight.task.done():
            inflight.task.cancel()
            if self._inflight.get(inflight.job.key) is inflight:
                del self._inflight[inflight.job.key]

    async def _run(self, inflight: Inflight) -> None:
        try:
            outcome = await self._ask(inflight)
            superseded = isinstance(outcome, ResponseMsg) and outcome.cancelled and \
                outcome.stats.get("cancel_reason") == "superseded"
            if superseded and inflight.waiters:
                # the worker replaced it with its first client's newer request; others still wait
                inflight.doc_key = doc_key(next(iter(inflight.waiters)).client)
                outcome = await self._ask(inflight)
        finally:
            if self._inflight.get(inflight.job.key) is inflight:
                del self._inflight[inflight.job.key]
        for waiter in list(inflight.waiters):
            if not waiter.future.done():
                waiter.future.set_result(outcome)

    async def _ask(self, inflight: Inflight) -> Outcome:
        job, d = inflight.job, inflight.job.decoding
        try:
            return await self.link.infill(job.prefix, job.suffix, doc_key=inflight.doc_key,
                                          options=dict(d.options), max_tokens=d.max_tokens,
                                          single_line=d.single_line, deadline_s=job.deadline_s)
        except HttpError as exc:
            return exc
        except WorkerUnavailable as exc:
            self.stats["worker_errors"] += 1
            return HttpError(503, f"no worker answers at {self.link.config.connect}: {exc}")
        except RequestFailed as exc:
            if exc.code is ErrorCode.deadline:     # a diffusion middle comes whole or not at all
                self.stats["deadline"] += 1
                return ResponseMsg(id="-", text="", stats={"stop_reason": "deadline"})
            self.stats["worker_errors"] += 1
            return HttpError(ERROR_STATUS.get(exc.code, 500), f"worker: {exc.message}")

    # ---------------------------------------------------------------- the answer

    @staticmethod
    def _completion(reply: ResponseMsg, job: FimJob) -> Completion:
        text, word = post_filter(reply.text, job)
        reason = str(reply.stats.get("stop_reason", ""))
        length = not word and reason in LENGTH_REASONS
        return Completion(text, "length" if length else "stop", dict(reply.stats), word)

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats, "in_flight": len(self._inflight)}
