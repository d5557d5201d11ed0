"""Run a suite through real workers, the same path an editor's completion takes, and record
every case as it finishes.

One `fim-server serve` per engine (started here via bench/spawn.py, or given with --connect);
each case is sent with WorkerClient, its decoding options in the request's `options`, one
request at a time, with no document key (a cold request: nothing reused across cases or
settings). Measured per case: end-to-end latency at the client, the engine's own latency from
the reply's stats, forward passes, tokens, tokens per forward and per second, stop reason, and
every other stat the engine reports (speculative: AR/draft forwards, acceptance length).

Settings run side by side: cases go in chunks, and every setting runs a chunk before the next
chunk starts, so a load change on the machine hits all settings alike. Scoring (sandboxed
subprocesses) happens between chunks, never while a request is being timed.

--parallel N starts N workers per engine (one per core, say) and spreads each chunk's cases
over them; every worker still gets one request at a time, so each latency is one request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from bench import records
from bench.machine import describe, versions
from bench.cases import FimCase
from bench.scoring import score_many
from bench.settings import Setting
from bench.suites import SUITES
from fim_server.wire.client import RequestFailed, WorkerClient, WorkerUnavailable
from fim_server.wire.options import DecodeConfig, apply

log = logging.getLogger(__name__)

CHUNK = 8                     # cases per side-by-side round
IDENTITY = ("model", "family", "device", "random_weights")


class HarnessError(Exception):
    """The run cannot go on (a worker would not start or stopped answering, a resume mismatch)."""


@dataclass(frozen=True)
class RunConfig:
    suite: str
    settings: tuple[Setting, ...]
    out: Path
    base_options: dict[str, Any] = field(default_factory=dict)   # sent with every request (max_tokens)
    connect: dict[str, str] = field(default_factory=dict)        # engine -> address of a running worker
    model: Optional[str] = None          # diffusion (and speculative drafter) checkpoint
    ar_model: Optional[str] = None       # AR baseline (and speculative verifier) checkpoint
    block_model: Optional[str] = None    # block-diffusion checkpoint
    threads: int = 0                     # torch threads of the workers started here; 0 = torch's default
    deadline_s: float = 300.0            # per request
    score_workers: int = 0               # parallel sandbox runs; 0 = one per core
    parallel: int = 1                    # workers per engine started here, each sent one case at a time
    args: dict[str, Any] = field(default_factory=dict)          # the command line, for the record
    note: Optional[str] = None           # a line for the report (what else the machine was doing)


# ---------------------------------------------------------------- workers


def weights_digest(model_dir: str) -> Optional[str]:
    """sha256 over the checkpoint's weight files, so results name the exact model."""
    path = Path(model_dir)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _spawn(engine: str, config: RunConfig):
    from bench.spawn import worker

    if engine == "speculative":
        extra = ("--ar-model", config.ar_model) if config.ar_model else ()
        return worker("speculative", config.model, config.threads, extra)
    model = {"ar": config.ar_model, "block": config.block_model}.get(engine, config.model)
    return worker(engine, model, config.threads)


def start_workers(stack: contextlib.ExitStack, engines: list[str], config: RunConfig) -> dict[str, list[str]]:
    """engine -> addresses (one, or config.parallel started here); they stop when `stack` closes."""
    addresses = {}
    for engine in engines:
        if engine in config.connect:
            addresses[engine] = [config.connect[engine]]
            continue
        try:
            addresses[engine] = [stack.enter_context(_spawn(engine, config)) for _ in range(config.parallel)]
        except RuntimeError as exc:
            raise HarnessError(f"the {engine} worker did not start: {exc}") from None
    return addresses


async def worker_info(client: WorkerClient, engine: str) -> dict[str, Any]:
    try:
        stats = await client.stats(deadline_s=30)
    except (RequestFailed, WorkerUnavailable) as exc:
        raise HarnessError(f"no worker answers at {client.address}: {exc}") from None
    if stats.get("engine") != engine:
        raise HarnessError(f"the worker at {client.address} runs the {stats.get('engine')} engine, not {engine}")
    info = {k: stats.get(k) for k in IDENTITY}
    info["weights_sha256"] = weights_digest(str(stats.get("model") or ""))
    info.update(load_ms=stats.get("load_ms"), warmup_ms=stats.get("warmup_ms"),
                defaults=stats.get("defaults") or {})      # the model's decoding defaults, under each setting
    return info


# ---------------------------------------------------------------- one case


def _row(case: FimCase, setting: Setting, options: dict, suite: str) -> dict[str, Any]:
    return {"type": "case", "suite": suite, "setting": setting.name, "engine": setting.engine,
            "options": dict(setting.options), "case_id": case.id, "kind": case.kind,
            "single_line": bool(options.get("single_line"))}


async def run_case(client: WorkerClient, case: FimCase, setting: Setting, config: RunConfig) -> dict[str, Any]:
    """Send one case; the row holds the completion and timings, or the error."""
    options = setting.request_options(config.base_options)
    if SUITES[config.suite].single_line(case):
        options["single_line"] = True
    row = _row(case, setting, options, config.suite)
    started = time.perf_counter()
    try:
        reply = await client.infill(case.prefix, case.suffix, options=options, deadline_s=config.deadline_s)
    except RequestFailed as exc:
        return {**row, "error": str(exc)}
    latency_ms = (time.perf_counter() - started) * 1000
    if reply.cancelled:
        return {**row, "error": "cancelled by the worker"}
    stats = {k: v for k, v in reply.stats.items() if k not in IDENTITY}
    engine_ms = float(stats.get("engine_latency_ms") or stats.get("latency_ms") or 0.0)
    tokens = int(stats.get("tokens") or 0)
    return {**row, "completion": reply.text, "latency_ms": round(latency_ms, 3),
            "engine_latency_ms": round(engine_ms, 3), "worker_latency_ms": stats.get("latency_ms"),
            "nfe": stats.get("nfe"), "tokens": tokens, "tokens_per_forward": stats.get("tokens_per_forward"),
            "tokens_per_s": round(tokens / (engine_ms / 1000), 2) if engine_ms > 0 else None,
            "stop_reason": stats.get("stop_reason"), "stats": stats, "error": None}


# ---------------------------------------------------------------- the run


def _check_resumable(previous: list[dict], header: dict) -> None:
    for old in records.runs(previous):
        if old.get("suite") != header["suite"]:
            raise HarnessError(f"{header['out']} holds a {old.get('suite')} run; use another --out for {header['suite']}")
        for engine, info in header["models"].items():
            before = (old.get("models") or {}).get(engine)
            if before and before.get("weights_sha256") != info.get("weights_sha256"):
                raise HarnessError(f"{header['out']} holds results of another {engine} model "
                                   f"({before.get('model')}, {before.get('weights_sha256')}); use another --out")


def _header(config: RunConfig, models: dict, n_cases: int) -> dict[str, Any]:
    devices = {info.get("device") or "cpu" for info in models.values()}
    device = next((d for d in devices if d.startswith("cuda")), "cpu")
    machine = describe(device)
    machine["torch_threads"] = config.threads or None     # the workers' (None: torch's default, or unknown)
    return {"type": "run", "suite": config.suite, "out": str(config.out), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine, "models": models, "versions": versions(), "cases": n_cases,
            "settings": [{"setting": s.name, "engine": s.engine, "options": dict(s.options),
                          "config": apply(DecodeConfig(engine=s.engine).replace(**models.get(s.engine, {}).get("defaults", {})),
                                          s.request_options(config.base_options)).to_dict()}
                         for s in config.settings],
            "base_options": config.base_options, "worker_threads": config.threads,
            "workers_per_engine": config.parallel,
            "quality": SUITES[config.suite].quality, "note": config.note, "args": config.args}


class _Runner:
    def __init__(self, config: RunConfig, cases: list[FimCase], clients: dict[str, list[WorkerClient]], done: set):
        self.config, self.cases, self.clients, self.done = config, cases, clients, done
        self.warmed: set[str] = set()

    async def warm_up(self, setting: Setting) -> None:
        """One untimed request per setting, so no timed case pays a first-use cost."""
        if setting.name not in self.warmed:
            self.warmed.add(setting.name)
            for client in self.clients[setting.engine]:
                await run_case(client, self.cases[0], setting, self.config)

    async def chunk(self, setting: Setting, cases: list[FimCase]) -> list[dict]:
        """The cases' rows in case order; with several workers, case k goes to worker k mod N."""
        await self.warm_up(setting)
        clients = self.clients[setting.engine]
        rows: list[Optional[dict]] = [None] * len(cases)

        async def one_worker(w: int) -> None:
            for k in range(w, len(cases), len(clients)):
                try:
                    rows[k] = {**await run_case(clients[w], cases[k], setting, self.config), "worker": w}
                except WorkerUnavailable as exc:
                    raise HarnessError(f"the {setting.engine} worker stopped answering: {exc}") from None

        await asyncio.gather(*(one_worker(w) for w in range(len(clients))))
        return rows

    def score(self, cases: list[FimCase], rows: list[dict]) -> list[dict]:
        ok = [(c, r) for c, r in zip(cases, rows) if not r.get("error")]
        scores = score_many(self.config.suite, [c for c, _ in ok], [r["completion"] for _, r in ok],
                            workers=self.config.score_workers)
        for (_, row), score in zip(ok, scores):
            row.update(score)
        return rows

    async def run(self, out: records.Appender) -> int:
        todo = sum((s.name, c.id) not in self.done for s in self.config.settings for c in self.cases)
        errors = 0
        with tqdm(total=todo, desc=self.config.suite, unit="case", dynamic_ncols=True) as bar:
            for start in range(0, len(self.cases), CHUNK):
                for setting in self.config.settings:
                    cases = [c for c in self.cases[start: start + CHUNK] if (setting.name, c.id) not in self.done]
                    if not cases:
                        continue
                    bar.set_postfix_str(setting.name)
                    rows = self.score(cases, await self.chunk(setting, cases))
                    out.write(rows)
                    errors += sum(bool(r.get("error")) for r in rows)
                    bar.update(len(cases))
        return errors


async def _run_async(config: RunConfig, cases: list[FimCase], addresses: dict[str, list[str]],
                     previous: list[dict]) -> int:
    clients = {engine: [WorkerClient(a) for a in found] for engine, found in addresses.items()}
    try:
        models = {engine: await worker_info(found[0], engine) for engine, found in clients.items()}
        header = _header(config, models, len(cases))
        _check_resumable(previous, header)
        with records.Appender(config.out / records.FILE) as out:
            out.write([header])
            return await _Runner(config, cases, clients, records.finished(previous)).run(out)
    finally:
        for found in clients.values():
            for client in found:
                client.close()


def run(config: RunConfig, cases: list[FimCase]) -> int:
    """Run every setting on every case not finished yet in config.out; returns the number of
    cases that ended in an error (they are retried by the next run with the same --out)."""
    previous = records.read_records(config.out / records.FILE)
    suites = {r.get("suite") for r in records.runs(previous)} - {config.suite}
    if suites:      # checked again with the models once the workers answer
        raise HarnessError(f"{config.out} holds a {suites.pop()} run; use another --out for {config.suite}")
    done = records.finished(previous)
    if all((s.name, c.id) in done for s in config.settings for c in cases):
        log.warning("every case of every setting is finished in %s already; nothing to run", config.out)
        return 0
    engines = list(dict.fromkeys(s.engine for s in config.settings))
    with contextlib.ExitStack() as stack:
        addresses = start_workers(stack, engines, config)
        return asyncio.run(_run_async(config, cases, addresses, previous))
