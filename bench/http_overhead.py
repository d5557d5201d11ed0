"""What `fim-server http` adds over asking the worker with WorkerClient (a benchmark, not a test).

    python -m bench.http_overhead --n 200              # starts a worker (bundled model) and the front-end
    python -m bench.http_overhead --connect ADDR --n 100

The same one worker answers both paths, one request at a time, interleaved pair by pair on the
same input (each pair a new first line, so no answer is reused from the one before; kv_reuse off).
For each API family (llama.cpp /infill, OpenAI /v1/completions, Tabby /v1/completions with
segments, Ollama /api/generate) it reports p50/p95 of:
  - end-to-end latency at the client: ZeroMQ (WorkerClient) and HTTP (aiohttp, one kept-alive
    connection, as tabby-agent and Continue use; curl-based clients add a loopback TCP connect);
  - the time outside the worker on each path: end to end less the worker's own receipt-to-reply
    time (`latency_ms` of the reply; the HTTP answer's `Server-Timing: worker;dur=`);
  - the front-end's overhead: per pair, HTTP's time outside the worker less ZeroMQ's.
The results name the machine (fim_server.measure.describe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.machine import describe, git_commit, one_line
from bench.spawn import worker
from fim_server.measure import percentile
from fim_server.wire.client import WorkerClient

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"
OPTIONS = {"kv_reuse": False}


def bodies(prefix: str, max_tokens: int) -> dict[str, tuple[str, dict]]:
    """Per family: its path and a body asking for the same middle."""
    return {
        "llama.cpp /infill": ("/infill", {"input_prefix": prefix, "input_suffix": SUFFIX, "n_predict": max_tokens,
                                          "cache_prompt": False, "t_max_predict_ms": 60000}),
        "openai /v1/completions": ("/v1/completions", {"model": "fim", "prompt": prefix, "suffix": SUFFIX,
                                                       "max_tokens": max_tokens, **OPTIONS}),
        "tabby /v1/completions": ("/v1/completions", {"language": "python", "max_tokens": max_tokens, **OPTIONS,
                                                      "segments": {"prefix": prefix, "suffix": SUFFIX}}),
        "ollama /api/generate": ("/api/generate", {"model": "fim", "prompt": prefix, "suffix": SUFFIX, "stream": False,
                                                   "options": {"num_predict": max_tokens, **OPTIONS}}),
    }


def worker_ms(header: str | None) -> float:
    found = re.search(r"worker;dur=([0-9.]+)", header or "")
    if not found:
        raise RuntimeError(f"no Server-Timing worker duration in the answer ({header!r})")
    return float(found[1])


async def pair(client: WorkerClient, session: aiohttp.ClientSession, url: str, path: str, body: dict,
               prefix: str, max_tokens: int, http_first: bool) -> dict[str, float]:
    async def zmq() -> tuple[float, float]:
        t0 = time.perf_counter()
        reply = await client.infill(prefix, SUFFIX, options=OPTIONS, max_tokens=max_tokens, deadline_s=60)
        return (time.perf_counter() - t0) * 1000, float(reply.stats["latency_ms"])

    async def http() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with session.post(url + path, data=json.dumps(body)) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status}")
            header = r.headers.get("Server-Timing")
        return (time.perf_counter() - t0) * 1000, worker_ms(header)

    first, second = (http, zmq) if http_first else (zmq, http)
    a, b = await first(), await second()
    (h, hw), (z, zw) = (a, b) if http_first else (b, a)
    return {"http": h, "zmq": z, "http_outside": h - hw, "zmq_outside": z - zw, "overhead": (h - hw) - (z - zw)}


def summary(rows: list[dict[str, float]]) -> dict:
    return {key: {"p50": percentile([r[key] for r in rows], 50), "p95": percentile([r[key] for r in rows], 95)}
            for key in rows[0]} | {"n": len(rows)}


async def run(address: str, url: str, n: int, warmup: int, max_tokens: int) -> dict:
    results = {}
    async with WorkerClient(address) as client, aiohttp.ClientSession() as session:
        for family in bodies(PREFIX, max_tokens):
            rows = []
            for i in range(-warmup, n):
                prefix = f"x_{i + warmup} = {i}\n" + PREFIX          # a new document head: nothing reused
                path, body = bodies(prefix, max_tokens)[family]
                row = await pair(client, session, url, path, body, prefix, max_tokens, http_first=i % 2 == 0)
                if i >= 0:
                    rows.append(row)
            results[family] = summary(rows)
            print(family, json.dumps(results[family]), flush=True)
    return results


@contextlib.contextmanager
def front_end(address: str):
    """`fim-server http --port 0` in front of `address`; yields its URL (its `listening` line)."""
    log = tempfile.NamedTemporaryFile(prefix="fim-http-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "fim_server.cli", "http", "--port", "0", "--connect", address,
                             "--no-spawn", "--max-tokens", "4096"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"fim-server http did not start: {Path(log.name).read_text()[-2000:]}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(30)
        os.unlink(log.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", default=None, help="use this worker instead of starting one")
    p.add_argument("--model", default=None, help="model of the started worker (default: the bundled one)")
    p.add_argument("--engine", default="diffusion")
    p.add_argument("--n", type=int, default=200, help="pairs per API family")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the started worker")
    p.add_argument("--out", default="bench/results/http_overhead.json")
    args = p.parse_args()
    ctx = contextlib.nullcontext(args.connect) if args.connect else \
        worker(args.engine, model=args.model, threads=args.threads)
    with ctx as address, front_end(address) as url:
        families = asyncio.run(run(address, url, args.n, args.warmup, args.max_tokens))
    machine = describe("cpu")
    results = {"machine": machine, "commit": git_commit(), "model": args.model or "bundled", "engine": args.engine,
               "n": args.n, "max_tokens": args.max_tokens, "worker_threads": args.threads,
               "load_average": os.getloadavg(), "families": families,
               "what": f"python -m bench.http_overhead --n {args.n} --max-tokens {args.max_tokens}; "
                       f"{one_line(machine)}; times in ms"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
