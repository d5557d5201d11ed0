"""Load test of a running worker (not a test): N concurrent clients, a fixed number of requests.

    fim-server serve --bind ipc:///tmp/fim.sock &
    python -m bench.load_worker --connect ipc:///tmp/fim.sock --clients 8 --requests 200

Each client is a plain DEALER socket that keeps --in-flight requests outstanding (1, like one
editor; more to push the queue). Every request has its own doc_key, so latest-wins never
cancels one. Reported: throughput, p50/p95 latency seen by the clients, the batch sizes the
worker formed during the run (from its stats), and whether every request got exactly one
answer: after the last answer the sockets stay open a moment to catch duplicates. Exit
status 1 when any request got no answer or more than one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter

import zmq
import zmq.asyncio

from fim_server.wire.protocol import (
    ErrorMsg, HealthMsg, InfillMsg, ProtocolError, StatsMsg, decode, encode,
)

PREFIXES = [
    "def add(a, b):\n    return ",
    "import os\n\ndef list_files(path):\n    ",
    "class Stack:\n    def __init__(self):\n        self.items = ",
    "for i in range(10):\n    if i % 2 == 0:\n        ",
]
DUPLICATE_WATCH_S = 0.5


class Tally:
    """Answers per request id, and what each was."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.answers: Counter[str] = Counter()
        self.latency_ms: list[float] = []
        self.outcomes: Counter[str] = Counter()

    def answered(self, msg) -> bool:
        """Record one reply; True when it is the first answer to a request we sent."""
        if getattr(msg, "id", None) not in self.sent:
            self.outcomes["unmatched"] += 1
            return False
        self.answers[msg.id] += 1
        if self.answers[msg.id] > 1:
            return False                # a duplicate: counted, not timed twice
        self.latency_ms.append((time.perf_counter() - self.sent[msg.id]) * 1000)
        if isinstance(msg, ErrorMsg):
            self.outcomes[f"error:{msg.code.value}"] += 1
        elif msg.cancelled:
            self.outcomes["cancelled"] += 1
        else:
            self.outcomes["ok"] += 1
        return True


async def run_client(ctx, address: str, ids: list[str], args, tally: Tally) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    done = asyncio.Event()
    remaining = set(ids)

    async def receive() -> None:
        while True:
            try:
                msg = decode(await sock.recv())
            except ProtocolError as exc:
                print(f"undecodable reply: {exc}", file=sys.stderr)
                continue
            if tally.answered(msg):
                remaining.discard(msg.id)
                slots.release()
                if not remaining:
                    done.set()

    slots = asyncio.Semaphore(args.in_flight)
    reader = asyncio.ensure_future(receive())
    try:
        for n, id in enumerate(ids):
            await slots.acquire()
            msg = InfillMsg(id=id, prefix=PREFIXES[n % len(PREFIXES)], suffix="\n", doc_key=f"doc-{id}",
                            max_tokens=args.max_tokens, options=json.loads(args.options))
            tally.sent[id] = time.perf_counter()
            await sock.send(encode(msg))
        await asyncio.wait_for(done.wait(), args.timeout)
    except asyncio.TimeoutError:
        pass                              # missing answers are reported, not raised
    finally:
        await asyncio.sleep(DUPLICATE_WATCH_S)
        reader.cancel()
        sock.close()


async def worker_stats(ctx, address: str) -> dict:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    try:
        await sock.send(encode(HealthMsg(id="bench-health")))
        reply = decode(await asyncio.wait_for(sock.recv(), 10))
        if not isinstance(reply, StatsMsg):
            raise SystemExit(f"worker answered health with {reply}")
        return reply.stats
    except asyncio.TimeoutError:
        raise SystemExit(f"no worker answers at {address}") from None
    finally:
        sock.close()


def batch_sizes_during(before: dict, after: dict) -> dict[str, int]:
    b, a = before.get("batch_sizes", {}), after.get("batch_sizes", {})
    return {k: a[k] - b.get(k, 0) for k in sorted(a, key=int) if a[k] != b.get(k, 0)}


async def main_async(args) -> int:
    ctx = zmq.asyncio.Context()
    before = await worker_stats(ctx, args.connect)
    tally = Tally()
    shares = [[f"c{c}-r{r}" for r in range(c, args.requests, args.clients)] for c in range(args.clients)]
    start = time.perf_counter()
    await asyncio.gather(*(run_client(ctx, args.connect, ids, args, tally) for ids in shares))
    wall = time.perf_counter() - start - DUPLICATE_WATCH_S
    after = await worker_stats(ctx, args.connect)
    ctx.term()

    all_ids = [id for ids in shares for id in ids]
    missing = [id for id in all_ids if tally.answers[id] == 0]
    duplicated = [id for id in all_ids if tally.answers[id] > 1]
    lat = sorted(tally.latency_ms)
    report = {
        "worker": {k: after.get(k) for k in ("model", "device", "engine", "max_batch", "queue_limit")},
        "clients": args.clients, "requests": args.requests, "in_flight": args.in_flight,
        "max_tokens": args.max_tokens, "wall_s": round(wall, 3),
        "throughput_rps": round(len(lat) / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": round(statistics.median(lat), 2) if lat else None,
                       "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None},
        "outcomes": dict(tally.outcomes),
        "batch_sizes": batch_sizes_during(before, after),
        # the worker's own figures are since it started, not only this run
        "worker_mean_nfe": after.get("mean_nfe"), "worker_tokens_per_forward": after.get("tokens_per_forward"),
        "missing": len(missing), "duplicated": len(duplicated),
        "exactly_one_answer_each": not missing and not duplicated,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["exactly_one_answer_each"] else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", required=True, metavar="ADDR")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="in total, shared among the clients")
    p.add_argument("--in-flight", type=int, default=1, help="outstanding requests per client")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--options", default="{}", help='decoding options as JSON, e.g. \'{"cache": "prefix"}\'')
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for a client's share")
    args = p.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
