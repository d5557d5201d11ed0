"""Follow-up vs cold request latency through a real worker (a benchmark, not a test).

    python -m bench.followup_latency --n 30                 # starts a diffusion and an AR worker
    python -m bench.followup_latency --connect ADDR --engines diffusion

For each held-out middle, in one document: a first request, then the user types characters.
  - typed-ahead: they type the start of the completion on screen -> the worker answers from
    its result cache (no model call).
  - diverging: they type the start of the true middle where it differs from the completion ->
    a computed request; the KV of the leading tokens it shares with the first request is
    reused. The same text is also sent as a cold request (a new document key) right after,
    so warm and cold are measured side by side on identical inputs.
Reports p50/p95 of each, the warm/cold ratio, the share of prompt tokens whose KV was reused,
and how often the warm answer equals the cold one (always, for the AR engine: causal KV
reuse is exact; the diffusion engine's reuse carries Fast-dLLM's approximation across requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path

from bench.engine_bench import held_out_cases
from fim_server.measure import percentile
from bench.machine import describe, one_line
from bench.spawn import worker
from fim_server.wire.client import WorkerClient


async def timed(client: WorkerClient, prefix: str, suffix: str, doc: str):
    t0 = time.perf_counter()
    reply = await client.infill(prefix, suffix, doc_key=doc, deadline_s=60)
    return reply, (time.perf_counter() - t0) * 1000


def diverging_typed(middle: str, completion: str, typed: int) -> str | None:
    """The true middle's indentation plus its next `typed`+ characters, when that is not the start
    of the completion on screen (else the worker would answer from its result cache)."""
    indent = len(middle) - len(middle.lstrip())
    for n in range(indent + typed, min(len(middle), indent + typed + 6) + 1):
        if middle[:n].strip() and not completion.startswith(middle[:n]):
            return middle[:n]
    return None


async def run_engine(addr: str, cases, typed: int) -> dict:
    lat = {"cold_first": [], "typed_ahead": [], "warm": [], "cold": []}
    reused_share, same, kinds = [], 0, {"typed_ahead_reused": 0}
    async with WorkerClient(addr) as client:
        for i, case in enumerate(cases):
            doc = f"doc-{i}-{time.monotonic_ns()}"
            first, ms = await timed(client, case.prefix, case.suffix, doc)
            lat["cold_first"].append(ms)
            if len(first.text) > typed:
                again, ms = await timed(client, case.prefix + first.text[:typed], case.suffix, doc)
                lat["typed_ahead"].append(ms)
                kinds["typed_ahead_reused"] += bool(again.stats.get("reused"))
                await timed(client, case.prefix, case.suffix, doc)        # back to the first state
            text = diverging_typed(case.middle, first.text, typed)
            if text is None:
                continue
            warm, ms_warm = await timed(client, case.prefix + text, case.suffix, doc)
            cold, ms_cold = await timed(client, case.prefix + text, case.suffix, doc + "-cold")
            lat["warm"].append(ms_warm)
            lat["cold"].append(ms_cold)
            reused_share.append(warm.stats.get("reused_tokens", 0) / max(1, warm.stats.get("prompt_tokens", 1)))
            same += warm.text == cold.text
        status = await client.stats()
    out = {k: {"n": len(v), "p50_ms": round(percentile(v, 50), 2), "p95_ms": round(percentile(v, 95), 2)}
           for k, v in lat.items() if v}
    if lat["warm"]:
        out["warm_over_cold_p50"] = round(percentile(lat["warm"], 50) / percentile(lat["cold"], 50), 3)
        out["mean_reused_share"] = round(sum(reused_share) / len(reused_share), 3)
        out["warm_equals_cold"] = f"{same}/{len(lat['warm'])}"
    out.update(kinds)
    out["worker_kv_reuse"] = status.get("kv_reuse")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", default=None, help="use this worker instead of starting one per engine")
    p.add_argument("--engines", default="diffusion,ar")
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--typed", type=int, default=2, help="characters the user types")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the started workers")
    p.add_argument("--out", default="bench/results/followup.json")
    args = p.parse_args()
    cases = held_out_cases(args.n, seed=3)
    results = {"machine": describe("cpu"), "n": args.n, "typed": args.typed}
    for engine in args.engines.split(","):
        ctx = contextlib.nullcontext(args.connect) if args.connect else worker(engine, threads=args.threads)
        with ctx as addr:
            results[engine] = asyncio.run(run_engine(addr, cases, args.typed))
        print(engine, json.dumps(results[engine], indent=1))
    results["what"] = f"python -m bench.followup_latency --n {args.n} --engines {args.engines}; {one_line(results['machine'])}"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
