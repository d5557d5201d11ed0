"""Follow-up vs cold request latency through a running worker (not a test).

    fim-server serve --bind tcp://127.0.0.1:5555 &
    python -m bench.followup_latency --connect tcp://127.0.0.1:5555 --n 20

For each of n held-out middles: a cold request for a new document, then a follow-up in which
the user has typed the first characters of the completion on screen (the prefix grows by
them, the suffix is unchanged). Reports p50/p95 of both, as seen by the client, and how many
follow-ups the worker answered by reuse (stats: reused, nfe 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.engine_bench import held_out_cases, percentile
from bench.machine import cpu_model
from fim_server.client import WorkerClient


async def run(addr: str, n: int, typed: int) -> dict:
    cold, follow, reused = [], [], 0
    async with WorkerClient(addr) as client:
        for i, case in enumerate(held_out_cases(n, seed=3)):
            doc = f"doc-{i}"
            t0 = time.perf_counter()
            first = await client.infill(case.prefix, case.suffix, doc_key=doc, deadline_s=30)
            cold.append((time.perf_counter() - t0) * 1000)
            if len(first.text) <= typed:
                continue
            t0 = time.perf_counter()
            again = await client.infill(case.prefix + first.text[:typed], case.suffix, doc_key=doc, deadline_s=30)
            follow.append((time.perf_counter() - t0) * 1000)
            reused += bool(again.stats.get("reused"))
    return {"cold_p50_ms": percentile(cold, 0.5), "cold_p95_ms": percentile(cold, 0.95),
            "followup_p50_ms": percentile(follow, 0.5) if follow else None,
            "followup_p95_ms": percentile(follow, 0.95) if follow else None,
            "followups": len(follow), "reused": reused, "cold": len(cold), "cpu": cpu_model()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--typed", type=int, default=2, help="characters of the completion the user types")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.connect, args.n, args.typed)), indent=1))


if __name__ == "__main__":
    main()
