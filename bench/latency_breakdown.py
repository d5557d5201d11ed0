"""Where the time of one completion goes, keystroke to reply (a benchmark, not a test).

    python -m bench.latency_breakdown [--n 4] [--repeat 1] [--threads 1] [--no-lsp]
    python -m bench.latency_breakdown --baseline /tmp/base    # before/after, side by side

Cases: real Python files of 800-1200 lines from packages installed next to this project (pyzmq,
msgpack, anyio, rich, packaging, click: code no bundled model was trained on; the models saw
the CPython stdlib only). In each file `--n` cursor positions evenly spaced through the file,
alternately mid-line (single-line mode: the rest of the line, at most 32 tokens) and at the
end of a line that opens a block (multi-line mode). The context is what fim-lsp sends
(lsp.cursor), so every path below does the same work. For each case:

  engine    one completion in this process, default DecodeConfig, diffusion (bundled) and AR
            (bundled) engines side by side; timed by wrapping engine methods with perf_counter
            (nothing in the engine is changed): set-up (of it fit_context: tokenization +
            layout), each model forward (full/refresh vs cached block forward; AR: prefill vs
            one-token), the Python time of the decoding loop outside the forwards (inputs and
            KV assembly, propose/select/commit, the stop checks and their single-line decode),
            and detokenize + post-process
  lsp       through `fim-lsp` and a real worker, started as an editor gets them: fim-lsp
            spawns its worker itself (bundled model, fim-lsp's thread count), one fim-lsp
            with its default settings and one with debounceMs=0, each with a worker of its
            own (one client per worker, as with an editor). A keystroke (didChange typing the
            character before the cursor) + inlineCompletion, to the reply, on each; the
            worker's own figures for that same request (fim/stats last_worker) split it into
            LSP + ZeroMQ, the worker's queue + batch wait (--batch-wait-ms, default 5) and the
            engine; the rest is the debounce
  burst     default settings, the last 3 characters typed `--gap-ms` apart (150 ms: 80 words
            a minute), each keystroke asking; time from the last keystroke to its reply (the
            adaptive debounce stretches to the typing rhythm)

With `--baseline DIR` (a copy of the project before a change: its fim_server/ and lsp/ are
used; this file is copied into its bench/) both trees run in child processes, each with its
own worker and fim-lsp, and the cases alternate between them (A B, then B A), so that load on
a shared machine falls on both alike.

Prints a table, writes bench/results/latency_breakdown.json with the machine named.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

from fim_server.measure import describe, one_line, percentile
from lsp.cursor import cursor_context

RESULTS = Path(__file__).parent / "results" / "latency_breakdown.json"
# installed third-party modules of 800-1200 lines (none from the stdlib the models were trained on)
FILES = ("zmq/sugar/socket.py", "msgpack/fallback.py", "anyio/_core/_sockets.py", "rich/table.py",
         "packaging/metadata.py", "click/termui.py")
SINGLE_LINE_TOKENS = 32          # lsp.service.SINGLE_LINE_TOKENS (not imported: a baseline may differ)
BURST_KEYS = 3


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    file: str
    line: int
    character: int            # code points = UTF-16 units here (the files are ASCII near the cursor)
    kind: str                 # midline | eol


def source_text(rel: str) -> str:
    return (Path(sysconfig.get_paths()["purelib"]) / rel).read_text(encoding="utf-8")


def cursor_cases(rel: str, text: str, n: int) -> list[Case]:
    """n cursors evenly spaced through the file: even ones mid-line (inside a code line of 16+
    characters), odd ones at the end of a line ending in ':' (a block opener); each at the
    nearest such line to its even spot."""
    lines = text.split("\n")
    cases = []
    for i in range(n):
        target = int((i + 0.5) * len(lines) / n)
        kind = "midline" if i % 2 == 0 else "eol"
        for line in sorted(range(len(lines)), key=lambda j: (abs(j - target), j)):
            body = lines[line].strip()
            if not body.isascii() or body.startswith(("#", '"', "'")):
                continue
            indent = len(lines[line]) - len(lines[line].lstrip())
            if kind == "midline" and len(body) >= 16:
                cases.append(Case(rel, line, indent + len(body) // 2, kind))
                break
            if kind == "eol" and body.endswith(":"):
                cases.append(Case(rel, line, len(lines[line].rstrip()), kind))
                break
    return cases


def all_cases(n: int) -> list[Case]:
    return [c for rel in FILES for c in cursor_cases(rel, source_text(rel), n)]


# ---------------------------------------------------------------- timing hooks


class Probes:
    """Inclusive wall time (ms) and calls per label of the callables it wraps. The labels open
    around a call are passed to `classify`, so one callable (the model forward, the tokenizer's
    decode) is counted by who called it."""

    def __init__(self) -> None:
        self.ms: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.open: list[str] = []

    def wrap(self, owner: Any, name: str, label: str = "",
             classify: Optional[Callable[[list[str]], str]] = None) -> None:
        original = getattr(owner, name, None)
        if original is None:                  # a version of the engine without it: counted as 0
            return

        def timed(*args, **kwargs):
            key = classify(self.open) if classify else (label or name)
            self.open.append(key)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.ms[key] += (time.perf_counter() - t0) * 1000
                self.calls[key] += 1
                self.open.pop()

        setattr(owner, name, timed)

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        ms, calls = dict(self.ms), dict(self.calls)
        self.ms.clear()
        self.calls.clear()
        return ms, calls


def caller(rules: dict[str, str], default: str) -> Callable[[list[str]], str]:
    """classify: the label of the innermost open label in `rules`, else `default`."""
    def classify(open_labels: list[str]) -> str:
        for label in reversed(open_labels):
            if label in rules:
                return rules[label]
        return default
    return classify


def probe_diffusion(engine, probes: Probes) -> None:
    import fim_server.engine.base as base
    import fim_server.engine.canvas as canvas
    import fim_server.engine.diffusion as diffusion

    for name in ("infill", "start", "decode", "step", "result", "_predict", "_full_forward",
                 "_cached_forward", "_propose", "_masked"):
        probes.wrap(engine, name)
    probes.wrap(engine, "_check_stop", "stop")
    probes.wrap(engine.lm, "forward", classify=caller(
        {"_full_forward": "forward.full", "_cached_forward": "forward.cached"}, "forward.other"))
    probes.wrap(engine.tok, "decode", classify=caller({"stop": "stop.decode"}, "result.decode"))
    for name in ("fit_context", "assemble", "shift_keys", "choose"):
        probes.wrap(diffusion, name)
    probes.wrap(canvas.Canvas, "commit")
    probes.wrap(base, "postprocess")


def probe_ar(engine, probes: Probes) -> None:
    import fim_server.engine.ar as ar

    for name in ("infill", "start", "decode", "result", "prefill", "decode_one_token", "pick"):
        probes.wrap(engine, name)
    probes.wrap(engine, "take", "stop")
    probes.wrap(engine.lm, "forward", classify=caller(
        {"prefill": "forward.full", "decode_one_token": "forward.cached"}, "forward.other"))
    probes.wrap(engine.tok, "decode", classify=caller({"stop": "stop.decode"}, "result.decode"))
    probes.wrap(ar, "fit_context")
    probes.wrap(ar, "assemble")


def attribute(ms: dict[str, float], calls: dict[str, int], stats) -> dict[str, float]:
    """One completion's time, split (ms); `steps` is the decoding loop's iterations."""
    g = lambda key: ms.get(key, 0.0)                                    # noqa: E731
    forwards = g("forward.full") + g("forward.cached")
    steps = stats.steps or 1
    return {
        "engine_ms": g("infill"),
        "setup_ms": g("start"), "fit_context_ms": g("fit_context"),
        "full_forwards": calls.get("forward.full", 0), "full_forward_ms": g("forward.full"),
        "cached_forwards": calls.get("forward.cached", 0), "cached_forward_ms": g("forward.cached"),
        "steps": stats.steps, "tokens": stats.tokens, "stop_reason": stats.stop_reason,
        "prompt_tokens": stats.prompt_tokens,
        "loop_ms": g("decode"),
        # the Python time of the decoding loop outside the model's forwards
        "overhead_ms": g("decode") - forwards,
        "overhead_per_step_ms": (g("decode") - forwards) / steps,
        "inputs_ms": g("_predict") - forwards if "_predict" in ms else g("prefill") + g("decode_one_token") - forwards,
        "kv_assemble_ms": g("assemble") + g("shift_keys"),
        # diffusion: propose + unmask rule + commit (step less predict); AR: the pick
        "propose_commit_ms": g("step") - g("_predict") if "step" in ms else g("pick"),
        "propose_ms": g("_propose") + g("_masked"), "select_ms": g("choose"), "commit_ms": g("commit"),
        "stop_check_ms": g("stop"), "stop_decode_ms": g("stop.decode"),
        "result_ms": g("result"), "postprocess_ms": g("postprocess"),
    }


# ---------------------------------------------------------------- one tree's runner


class Runner:
    """Everything one source tree measures: the two engines in this process and, unless
    `lsp` is off, two fim-lsp servers (debounce 0 and the defaults), each with the worker it
    spawned."""

    def __init__(self, threads: int, lsp: bool, gap_ms: float):
        self.threads, self.use_lsp, self.gap_ms = threads, lsp, gap_ms
        self.texts: dict[str, str] = {}

    async def start(self) -> None:
        import torch

        from fim_server.engine import load_engine

        torch.set_num_threads(self.threads)
        self.engines = {kind: load_engine(kind, None, device="cpu") for kind in ("diffusion", "ar")}
        self.probes = {kind: Probes() for kind in self.engines}
        for kind, engine in self.engines.items():
            engine.warmup()
            (probe_diffusion if kind == "diffusion" else probe_ar)(engine, self.probes[kind])
        if not self.use_lsp:
            return
        self.tmp = Path(tempfile.mkdtemp(prefix="fim-lb-"))
        self.clients = {name: await start_client(f"ipc://{self.tmp}/{name}.sock", options)
                        for name, options in (("zero", {"debounceMs": 0}), ("default", {}))}
        for client in self.clients.values():
            self.worker_command = await spawned_worker(client)
        self.serial = 0

    async def stop(self) -> None:
        if not self.use_lsp:
            return
        for client in self.clients.values():
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()                    # the spawning fim-lsp stops its worker
        shutil.rmtree(self.tmp, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        return {"engine_threads": self.threads, "worker_command": getattr(self, "worker_command", None)}

    async def run(self, case: Case) -> dict[str, Any]:
        if case.file not in self.texts:
            self.texts[case.file] = source_text(case.file)
        doc = self.texts[case.file]
        t0 = time.perf_counter()
        ctx = cursor_context(doc, case.line, case.character)
        row: dict[str, Any] = {**asdict(case), "single_line": ctx.single_line,
                               "cursor_context_ms": (time.perf_counter() - t0) * 1000}
        for kind in self.engines:
            row[kind] = self.engine_case(kind, ctx)
        if self.use_lsp:
            row["lsp"] = await self.lsp_case(doc, ctx.offset)
        return row

    def engine_case(self, kind: str, ctx) -> dict[str, Any]:
        from fim_server.engine import InfillRequest
        from fim_server.wire.options import DecodeConfig

        config = DecodeConfig(engine=kind, single_line=ctx.single_line,
                              **({"max_tokens": SINGLE_LINE_TOKENS} if ctx.single_line else {}))
        result = self.engines[kind].infill([InfillRequest(ctx.prefix, ctx.suffix)], config)[0]
        ms, calls = self.probes[kind].take()
        return {**attribute(ms, calls, result.stats), "text": result.text}

    async def lsp_case(self, doc: str, offset: int) -> dict[str, Any]:
        row = {}
        for name, client in self.clients.items():
            elapsed, last = await self.keystrokes(client, doc, offset, 1)
            row[name] = {"keystroke_ms": elapsed, "worker_ms": last["worker_ms"], "engine_ms": last["engine_ms"]}
        elapsed, last = await self.keystrokes(self.clients["default"], doc, offset, BURST_KEYS)
        row["burst"] = {"keystroke_ms": elapsed, "worker_ms": last["worker_ms"], "engine_ms": last["engine_ms"]}
        return row

    async def keystrokes(self, client, doc: str, offset: int, keys: int) -> tuple[float, dict]:
        """Open a document that lacks doc[offset - keys:offset], type those characters `gap_ms`
        apart, each followed by an inlineCompletion request: ms from the last keystroke to its
        reply, and the worker's figures for it."""
        from lsprotocol import types as lsp

        from bench.lsp_latency import inline_params, insert, position_of

        self.serial += 1
        uri = f"file:///bench/lb-{self.serial}.py"
        start = offset - keys
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=doc[:start] + doc[offset:])))
        pending = []
        for i in range(keys):
            if i:
                await asyncio.sleep(self.gap_ms / 1000)
            t0 = time.perf_counter()
            insert(client, uri, 2 + i, position_of(doc, start + i), doc[start + i])
            pending.append(asyncio.ensure_future(client.text_document_inline_completion_async(
                inline_params(uri, position_of(doc, start + i + 1)))))
        await asyncio.gather(*pending)              # the earlier ones come back empty (superseded)
        elapsed = (time.perf_counter() - t0) * 1000
        last = (await client.protocol.send_request_async("fim/stats", {})).last_worker
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri)))
        assert last is not None and last.uri == uri, "the server's latest worker answer is another request's"
        return elapsed, {"worker_ms": last.worker_ms, "engine_ms": last.engine_ms}


async def start_client(address: str, options: dict):
    """A fim-lsp with these settings that starts its own worker on `address`."""
    from lsprotocol import types as lsp
    from pygls.lsp.client import BaseLanguageClient

    client = BaseLanguageClient("latency-breakdown", "1")
    for method in (lsp.WINDOW_LOG_MESSAGE, lsp.WINDOW_SHOW_MESSAGE):     # what the server says: not measured
        client.feature(method)(lambda params: None)
    await client.start_io(sys.executable, "-m", "lsp.server", "--connect", address)
    capabilities = lsp.ClientCapabilities(text_document=lsp.TextDocumentClientCapabilities(
        inline_completion=lsp.InlineCompletionClientCapabilities()))
    await client.initialize_async(lsp.InitializeParams(capabilities=capabilities, initialization_options=options))
    client.initialized(lsp.InitializedParams())
    return client


async def spawned_worker(client, timeout_s: float = 300) -> list[str]:
    """Wait until the worker fim-lsp spawned answers; its command line (thread count and all)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        worker = (await client.protocol.send_request_async("fim/stats", {})).worker
        if worker.state == "up" and worker.spawned_pid:
            try:
                return Path(f"/proc/{worker.spawned_pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            except OSError:
                return [f"pid {worker.spawned_pid}"]
        await asyncio.sleep(0.5)
    raise RuntimeError("the worker fim-lsp spawned did not come up")


async def serve_runner(args) -> None:
    """Child mode (--serve): a JSON case per stdin line in, a JSON row per stdout line out."""
    runner = Runner(args.threads, not args.no_lsp, args.gap_ms)
    await runner.start()
    print(json.dumps(runner.info()), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            row = await runner.run(Case(**json.loads(line)))
            print(json.dumps(row), flush=True)
    finally:
        await runner.stop()


class Child:
    """A runner in a child process, on the source tree at `root`."""

    def __init__(self, root: Path, args):
        cmd = [sys.executable, "-m", "bench.latency_breakdown", "--serve", "--threads", str(args.threads),
               "--gap-ms", str(args.gap_ms), *(["--no-lsp"] if args.no_lsp else [])]
        # cwd and PYTHONPATH pick the tree: the worker and fim-lsp it starts inherit both
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a runner exited (status {self.proc.wait()})")
        return json.loads(line)

    def run(self, case: Case) -> dict:
        self.proc.stdin.write(json.dumps(asdict(case)) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


# ---------------------------------------------------------------- summary


ENGINE_FIELDS = ("engine_ms", "setup_ms", "fit_context_ms", "full_forwards", "full_forward_ms",
                 "cached_forwards", "cached_forward_ms", "steps", "loop_ms", "overhead_ms",
                 "overhead_per_step_ms", "inputs_ms", "kv_assemble_ms", "propose_commit_ms", "propose_ms",
                 "select_ms", "commit_ms", "stop_check_ms", "stop_decode_ms", "result_ms", "postprocess_ms")


def p50(values: list[float]) -> Optional[float]:
    return percentile(values, 50)


def summarize(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"cases": len(rows), "single_line_cases": sum(r["single_line"] for r in rows),
                           "cursor_context_ms": p50([r["cursor_context_ms"] for r in rows])}
    for kind in ("diffusion", "ar"):
        runs = [r[kind] for r in rows]
        side = {f: {"p50": p50([x[f] for x in runs]), "p95": percentile([x[f] for x in runs], 95),
                    "mean": round(statistics.fmean(x[f] for x in runs), 3)} for f in ENGINE_FIELDS}
        full = sum(x["full_forwards"] for x in runs)
        cached = sum(x["cached_forwards"] for x in runs)
        # pooled over the cases: ms per forward of each kind, and the loop's Python time per step
        side["ms_per_full_forward"] = round(sum(x["full_forward_ms"] for x in runs) / full, 3) if full else None
        side["ms_per_cached_forward"] = round(sum(x["cached_forward_ms"] for x in runs) / cached, 3) if cached else None
        side["overhead_ms_per_step_pooled"] = round(sum(x["overhead_ms"] for x in runs) /
                                                    max(1, sum(x["steps"] for x in runs)), 3)
        side["forward_share"] = round(sum(x["full_forward_ms"] + x["cached_forward_ms"] for x in runs) /
                                      sum(x["engine_ms"] for x in runs), 3)
        out[kind] = side
    lsp_rows = [r["lsp"] for r in rows if "lsp" in r]
    if len(lsp_rows) == len(rows):
        paths = {}
        for path in ("zero", "default", "burst"):
            xs = [x[path] for x in lsp_rows]
            by_mode = {mode: [x["keystroke_ms"] for x, r in zip(xs, rows) if r["single_line"] == (mode == "single")]
                       for mode in ("single", "multi")}
            paths[path] = {
                "keystroke_ms": {"p50": p50([x["keystroke_ms"] for x in xs]),
                                 "p95": percentile([x["keystroke_ms"] for x in xs], 95),
                                 "p50_single_line": p50(by_mode["single"]), "p50_multi_line": p50(by_mode["multi"])},
                "engine_ms": p50([x["engine_ms"] for x in xs]),
                # the same request: client time less the worker's, the worker's less the engine's
                "lsp_zmq_ms": p50([x["keystroke_ms"] - x["worker_ms"] for x in xs]),
                "queue_batch_wait_ms": p50([x["worker_ms"] - x["engine_ms"] for x in xs]),
                "not_engine_ms": p50([x["keystroke_ms"] - x["engine_ms"] for x in xs]),
            }
        out["lsp"] = paths
    return out


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


Row = tuple[str, Any, Any, Optional[Callable[[dict], float]]]


def lsp_path(path: str, part: str) -> Callable[[dict], float]:
    """A case's figure on one fim-lsp path: keystroke_ms, or a part of it (same request)."""
    def get(row: dict) -> float:
        x = row["lsp"][path]
        return {"keystroke": x["keystroke_ms"], "engine": x["engine_ms"],
                "not_engine": x["keystroke_ms"] - x["engine_ms"], "lsp_zmq": x["keystroke_ms"] - x["worker_ms"],
                "queue": x["worker_ms"] - x["engine_ms"]}[part]
    return get


def table_rows(s: dict) -> list[Row]:
    """(label, diffusion value, AR value, the diffusion figure of one case) rows of one summary;
    lsp rows have no AR value."""
    d, a = s["diffusion"], s["ar"]
    rows: list[Row] = []
    if "lsp" in s:
        lp = s["lsp"]
        rows += [
            ("keystroke to reply, fim-lsp default settings (p50)", lp["default"]["keystroke_ms"]["p50"], None,
             lsp_path("default", "keystroke")),
            ("  ... p95", lp["default"]["keystroke_ms"]["p95"], None, None),
            ("  ... single-line cases (p50)", lp["default"]["keystroke_ms"]["p50_single_line"], None, None),
            ("  ... multi-line cases (p50)", lp["default"]["keystroke_ms"]["p50_multi_line"], None, None),
            ("keystroke to reply, fim-lsp debounce 0 (p50)", lp["zero"]["keystroke_ms"]["p50"], None,
             lsp_path("zero", "keystroke")),
            (f"typing burst ({BURST_KEYS} keys), last key to reply, default (p50)",
             lp["burst"]["keystroke_ms"]["p50"], None, lsp_path("burst", "keystroke")),
            ("  engine in the worker, same request (p50)", lp["default"]["engine_ms"], None,
             lsp_path("default", "engine")),
            ("  not engine: default settings (p50)", lp["default"]["not_engine_ms"], None,
             lsp_path("default", "not_engine")),
            ("  not engine: debounce 0 (p50)", lp["zero"]["not_engine_ms"], None, lsp_path("zero", "not_engine")),
            ("  not engine: typing burst (p50)", lp["burst"]["not_engine_ms"], None, lsp_path("burst", "not_engine")),
            ("    LSP + ZeroMQ, debounce 0 (p50)", lp["zero"]["lsp_zmq_ms"], None, lsp_path("zero", "lsp_zmq")),
            ("    worker queue + batch wait (p50)", lp["zero"]["queue_batch_wait_ms"], None, lsp_path("zero", "queue")),
        ]

    def f(key: str, label: str) -> Row:
        return label, d[key]["p50"], a[key]["p50"], lambda row: row["diffusion"][key]

    rows += [
        f("engine_ms", "engine in-process, total (p50)"),
        ("  cursor context (lsp.cursor, p50)", s["cursor_context_ms"], s["cursor_context_ms"], None),
        f("setup_ms", "  set-up (p50)"),
        f("fit_context_ms", "    tokenize + layout, fit_context (p50)"),
        f("full_forwards", "  full / refresh forwards (AR: prefill), count p50"),
        f("full_forward_ms", "    full forwards, ms (p50)"),
        ("    ms per full forward (pooled)", d["ms_per_full_forward"], a["ms_per_full_forward"], None),
        f("cached_forwards", "  cached block forwards (AR: one token), count p50"),
        f("cached_forward_ms", "    cached forwards, ms (p50)"),
        ("    ms per cached forward (pooled)", d["ms_per_cached_forward"], a["ms_per_cached_forward"], None),
        ("  forwards' share of the engine time", d["forward_share"], a["forward_share"], None),
        f("overhead_ms", "  decoding loop outside the forwards (p50)"),
        ("    per step (pooled)", d["overhead_ms_per_step_pooled"], a["overhead_ms_per_step_pooled"], None),
        f("inputs_ms", "    inputs + KV assembly (p50)"),
        f("kv_assemble_ms", "      of it KV assemble / shift (p50)"),
        f("propose_commit_ms", "    propose + select + commit (AR: pick) (p50)"),
        f("propose_ms", "      of it propose: tokens, confidences, masks (p50)"),
        f("select_ms", "      of it the unmask rule (p50)"),
        f("commit_ms", "      of it commit: canvas edits (p50)"),
        f("stop_check_ms", "    stop checks (p50)"),
        f("stop_decode_ms", "      of it single-line decode (p50)"),
        f("result_ms", "  detokenize + post-process (p50)"),
        f("postprocess_ms", "    of it post-process (p50)"),
    ]
    return rows


def paired_ratio(before: list[dict], after: list[dict], get: Callable[[dict], float]) -> Optional[float]:
    """Median over the cases of after / before on the same case: free of the case mix."""
    ratios = [get(y) / get(x) for x, y in zip(before, after) if get(x) > 0]
    return round(statistics.median(ratios), 3) if ratios else None


def print_table(summaries: dict[str, dict], machine: dict, rows: dict[str, list[dict]]) -> None:
    table = Table(title=f"latency breakdown, one completion, ms ({one_line(machine)})")
    table.add_column("", justify="left")
    names = list(summaries)
    for name in names:
        suffix = f" {name}" if len(names) > 1 else ""
        table.add_column(f"diffusion{suffix}", justify="right")
        table.add_column(f"AR{suffix}", justify="right")
    paired = len(names) == 2
    if paired:
        table.add_column("diffusion after / before: p50s", justify="right")
        table.add_column("per case (median)", justify="right")
    per_name = [table_rows(summaries[n]) for n in names]
    for i, (label, *_, get) in enumerate(per_name[0]):
        cells = []
        for table_row in per_name:
            cells += [fmt(table_row[i][1]), fmt(table_row[i][2])]
        if paired:
            before, after = per_name[0][i][1], per_name[1][i][1]
            cells.append(f"{after / before:.2f}" if isinstance(before, (int, float)) and before and
                         isinstance(after, (int, float)) else "-")
            ratio = paired_ratio(*rows.values(), get) if get else None
            cells.append(fmt(ratio, 2))
            if ratio is not None:
                summaries[names[1]].setdefault("paired_median_ratio", {})[label.strip()] = ratio
        table.add_row(label, *cells)
    Console(width=170).print(table)


# ---------------------------------------------------------------- main


async def run_here(cases: list[Case], args) -> tuple[list[dict], dict]:
    runner = Runner(args.threads, not args.no_lsp, args.gap_ms)
    await runner.start()
    try:
        await runner.run(cases[0])                       # first use of every path, not counted
        return [await runner.run(case) for case in cases], runner.info()
    finally:
        await runner.stop()


def run_side_by_side(cases: list[Case], args) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    here = Path(__file__).resolve()
    root = here.parent.parent
    baseline = args.baseline.resolve()
    (baseline / "bench").mkdir(exist_ok=True)
    shutil.copy(here, baseline / "bench" / here.name)       # the same benchmark on both trees
    children = {"before": Child(baseline, args), "after": Child(root, args)}
    rows: dict[str, list[dict]] = {name: [] for name in children}
    try:
        for child in children.values():
            child.run(cases[0])                          # first use of every path, not counted
        for i, case in enumerate(cases):
            order = list(children) if i % 2 == 0 else list(reversed(children))
            for name in order:
                rows[name].append(children[name].run(case))
            print(f"case {i + 1}/{len(cases)}", file=sys.stderr, flush=True)
    finally:
        for child in children.values():
            child.close()
    return rows, {name: child.hello for name, child in children.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4, help="cursor positions per file (6 files)")
    p.add_argument("--repeat", type=int, default=1, help="run the cases this many times")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the in-process engines (the worker's are fim-lsp's choice)")
    p.add_argument("--gap-ms", type=float, default=150.0, help="time between keystrokes of a typing burst")
    p.add_argument("--no-lsp", action="store_true", help="the in-process engines only")
    p.add_argument("--baseline", type=Path, help="a copy of the project before a change: run both, alternating")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--reprint", type=Path, help="a saved run (its JSON): summarize it again (rewriting its "
                                                 "summary) and print it; runs nothing")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return asyncio.run(serve_runner(args))
    if args.reprint:
        saved = json.loads(args.reprint.read_text())
        summaries = {name: summarize(r) for name, r in saved["cases"].items()}
        print_table(summaries, saved["machine"], saved["cases"])
        for kind in ("diffusion", "ar") if "after" in summaries else ():
            summaries["after"][f"{kind}_same_text_as_before"] = saved["summary"]["after"][f"{kind}_same_text_as_before"]
        args.reprint.write_text(json.dumps({**saved, "summary": summaries}, indent=1) + "\n")
        return None
    cases = all_cases(args.n) * args.repeat
    load_before = os.getloadavg()                       # other work on the machine shows in the spread
    t0 = time.perf_counter()
    if args.baseline:
        rows, info = run_side_by_side(cases, args)
    else:
        here, here_info = asyncio.run(run_here(cases, args))
        rows, info = {"current": here}, {"current": here_info}
    import torch

    torch.set_num_threads(args.threads)
    machine = describe("cpu")
    summaries = {name: summarize(r) for name, r in rows.items()}
    print_table(summaries, machine, rows)
    for name, tree in info.items():
        print(f"{name}: in-process engines on {tree['engine_threads']} torch thread(s); "
              f"worker spawned by fim-lsp: {' '.join(tree['worker_command'] or ['-'])}")
    if args.baseline:
        before, after = rows["before"], rows["after"]
        for kind in ("diffusion", "ar"):
            same = sum(a[kind]["text"] == b[kind]["text"] for a, b in zip(before, after))
            summaries["after"][f"{kind}_same_text_as_before"] = same
            print(f"{kind}: the same completion before and after in {same} of {len(before)} cases")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": " ".join(["python -m bench.latency_breakdown", *sys.argv[1:]]),
        "models": "bundled fim-tiny-dlm (diffusion) and fim-tiny-ar, default DecodeConfig "
                  f"(single-line: max_tokens {SINGLE_LINE_TOKENS})",
        "files": list(FILES), "machine": machine, "trees": info, "wall_s": round(time.perf_counter() - t0, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "summary": summaries, "cases": rows,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
