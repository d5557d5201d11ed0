"""Keystroke-to-reply latency through the language server, and what LSP + ZeroMQ add (not a test).

    python -m bench.lsp_latency --n 24

One run starts a worker (`fim-server serve`, bundled diffusion model) and a `fim-lsp` on it,
loads the same model in this process, then for each held-out case measures side by side:

  lsp      a keystroke (didChange inserting the character before the cursor) followed by
           textDocument/inlineCompletion, to the reply: LSP (stdio, JSON) + ZeroMQ + worker + engine
  zmq      the same context sent straight to the worker with WorkerClient: ZeroMQ + worker + engine
  engine   the same context and options on the in-process engine: the model alone
  reuse    the next keystroke types the first character of the completion on screen:
           answered by the server from it (typed-ahead reuse), no worker call

The context is what the server sends (lsp.cursor clipping, its single-line decision and token
cap), so the three computed paths do the same work. The overhead of LSP + ZeroMQ is the
keystroke-to-reply time minus the engine time the worker measured for that same request (fim/stats
`last_worker`), which is free of the model's run-to-run noise; the difference to the separate
direct call is reported too.
The server runs with debounceMs=0: a real editor adds the debounce (default 50 ms) on top.
Writes bench/results/lsp_latency.json with the machine named and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.client import BaseLanguageClient
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from bench.engine_bench import held_out_cases
from fim_server.wire.client import WorkerClient
from fim_server.wire.spawn import SpawnedWorker
from fim_server.measure import describe, one_line, percentile
from lsp.cursor import cursor_context
from lsp.service import SINGLE_LINE_TOKENS

RESULTS = Path(__file__).parent / "results" / "lsp_latency.json"
READY_S = 180


# ---------------------------------------------------------------- processes


def start_worker(address: str, threads: int, log_path: Path) -> SpawnedWorker:
    return SpawnedWorker(address, log_path, threads=threads, timeout=READY_S)


async def start_lsp(address: str) -> BaseLanguageClient:
    client = BaseLanguageClient("lsp-latency-bench", "1")
    await client.start_io(sys.executable, "-m", "lsp.server", "--connect", address, "--no-spawn")
    capabilities = lsp.ClientCapabilities(text_document=lsp.TextDocumentClientCapabilities(
        inline_completion=lsp.InlineCompletionClientCapabilities()))
    await client.initialize_async(lsp.InitializeParams(capabilities=capabilities,
                                                       initialization_options={"debounceMs": 0}))
    client.initialized(lsp.InitializedParams())
    return client


# ---------------------------------------------------------------- one case, three paths


def position_of(text: str, offset: int) -> lsp.Position:
    """Line and UTF-16 column of a code-point offset."""
    before = text[:offset]
    line_start = before.rfind("\n") + 1
    column = before[line_start:]
    return lsp.Position(line=before.count("\n"), character=len(column.encode("utf-16-le")) // 2)


def inline_params(uri: str, position: lsp.Position) -> lsp.InlineCompletionParams:
    return lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=position,
        context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic))


def insert(client: BaseLanguageClient, uri: str, version: int, at: lsp.Position, text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at, end=at), text=text)]))


async def keystroke(client: BaseLanguageClient, uri: str, version: int, doc: str, offset: int) -> tuple[float, str]:
    """Type doc[offset - 1] (the document holds everything else), ask, time to the reply."""
    t0 = time.perf_counter()
    insert(client, uri, version, position_of(doc, offset - 1), doc[offset - 1])
    result = await client.text_document_inline_completion_async(inline_params(uri, position_of(doc, offset)))
    elapsed = (time.perf_counter() - t0) * 1000
    items = result.items if isinstance(result, lsp.InlineCompletionList) else (result or [])
    return elapsed, (items[0].insert_text if items else "")


async def run_case(i: int, case, client: BaseLanguageClient, worker: WorkerClient, engine) -> dict:
    from fim_server.wire.options import DecodeConfig
    from fim_server.engine import InfillRequest

    doc, offset = case.prefix + case.suffix, len(case.prefix)
    uri = f"file:///bench/case-{i}.py"
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=doc[:offset - 1] + doc[offset:])))
    lsp_ms, shown = await keystroke(client, uri, 2, doc, offset)
    last = (await client.protocol.send_request_async("fim/stats", {})).last_worker
    assert last.uri == uri, "the server's latest worker answer is another request's"

    ctx = cursor_context(doc, *_line_char(doc, offset))        # what the server sent
    max_tokens = SINGLE_LINE_TOKENS if ctx.single_line else None
    t0 = time.perf_counter()
    reply = await worker.infill(ctx.prefix, ctx.suffix, single_line=ctx.single_line, max_tokens=max_tokens,
                                deadline_s=120)
    zmq_ms = (time.perf_counter() - t0) * 1000
    config = DecodeConfig(single_line=ctx.single_line, **({"max_tokens": max_tokens} if max_tokens else {}))
    t0 = time.perf_counter()
    engine.infill([InfillRequest(ctx.prefix, ctx.suffix)], config)
    engine_ms = (time.perf_counter() - t0) * 1000

    row = {"lsp_ms": lsp_ms, "zmq_ms": zmq_ms, "engine_ms": engine_ms, "single_line": ctx.single_line,
           # the engine time the worker measured inside the very same request: exact pairing
           "lsp_engine_ms": last.engine_ms, "zmq_engine_ms": reply.stats["engine_latency_ms"],
           "shown": bool(shown), "reuse_ms": None}
    if len(shown) >= 2:                                         # type the first character of it
        typed = doc[:offset] + shown[0] + doc[offset:]
        row["reuse_ms"], rest = await keystroke(client, uri, 3, typed, offset + 1)
        row["reuse_hit"] = rest == shown[1:]
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=uri)))
    return row


def _line_char(doc: str, offset: int) -> tuple[int, int]:
    position = position_of(doc, offset)
    return position.line, position.character


# ---------------------------------------------------------------- summary


def summarize(rows: list[dict]) -> dict:
    def stats(values: list[float]) -> dict:
        return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}

    reuse = [r["reuse_ms"] for r in rows if r["reuse_ms"] is not None]
    return {
        "lsp_ms": stats([r["lsp_ms"] for r in rows]),
        "zmq_ms": stats([r["zmq_ms"] for r in rows]),
        "engine_ms": stats([r["engine_ms"] for r in rows]),
        "reuse_ms": stats(reuse) if reuse else None,
        # same request: client-side time minus the engine time the worker measured for it
        "lsp_overhead_ms": stats([r["lsp_ms"] - r["lsp_engine_ms"] for r in rows]),
        "zmq_overhead_ms": stats([r["zmq_ms"] - r["zmq_engine_ms"] for r in rows]),
        # against the separate in-process call on the same input (carries run-to-run noise)
        "lsp_minus_direct_ms": stats([r["lsp_ms"] - r["engine_ms"] for r in rows]),
        "reuse_hits": sum(bool(r.get("reuse_hit")) for r in rows),
        "shown": sum(r["shown"] for r in rows),
        "single_line_cases": sum(r["single_line"] for r in rows),
    }


def print_table(summary: dict, machine: dict) -> None:
    table = Table(title=f"keystroke to reply, bundled diffusion model ({one_line(machine)})")
    for name in ("path", "p50 ms", "p95 ms", "n"):
        table.add_column(name, justify="right" if name != "path" else "left")
    labels = [("lsp_ms", "fim-lsp + ZeroMQ + worker"), ("zmq_ms", "ZeroMQ + worker"),
              ("engine_ms", "engine in-process (direct call)"), ("reuse_ms", "fim-lsp typed-ahead reuse"),
              ("lsp_overhead_ms", "overhead LSP + ZeroMQ (same request)"),
              ("zmq_overhead_ms", "overhead ZeroMQ (same request)"),
              ("lsp_minus_direct_ms", "fim-lsp minus direct call")]
    for key, label in labels:
        s = summary[key]
        if s:
            table.add_row(label, f"{s['p50']:.1f}", f"{s['p95']:.1f}", str(s["n"]))
    Console().print(table)


# ---------------------------------------------------------------- main


async def run(n: int, seed: int, threads: int) -> tuple[list[dict], dict]:
    import torch

    from fim_server.engine import load_engine

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="fim-lspb-"))
    address = f"ipc://{tmp}/w.sock"
    spawned = start_worker(address, threads, tmp / "worker.log")
    client = worker = None
    try:
        engine = load_engine("diffusion", None, device="cpu")
        engine.warmup()
        client = await start_lsp(address)
        worker = WorkerClient(address)
        cases = [c for c in held_out_cases(n, seed) if c.prefix]
        rows = [await run_case(i, case, client, worker, engine) for i, case in enumerate(tqdm(cases, desc="cases"))]
        server_stats = await client.protocol.send_request_async("fim/stats", {})
        return rows, {"requests": server_stats.requests, "computed": server_stats.computed,
                      "reused": server_stats.reused, "cancelled": server_stats.cancelled}
    finally:
        if worker is not None:
            worker.close()
        if client is not None:
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()
        spawned.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="held-out cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads, worker and in-process engine alike")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    load_before = os.getloadavg()         # other work on the machine shows up in the engine's spread
    rows, server_stats = asyncio.run(run(args.n, args.seed, args.threads))
    machine = describe("cpu")
    summary = summarize(rows)
    print_table(summary, machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": f"python -m bench.lsp_latency --n {args.n} --seed {args.seed} --threads {args.threads}",
        "model": "bundled fim-tiny-dlm (diffusion), default decoding options, debounceMs=0",
        "machine": machine, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "summary": summary, "server_stats": server_stats, "cases": rows,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
