"""The batch job: holes -> length-sorted batches -> engine -> journal and outputs.

Holes are filled in rounds: round r holds hole r of every file that has one (and, in round 0,
every JSONL task). A file's hole r+1 is asked for only once its hole r has a fill (holes.py),
so inside a round all requests are independent and are batched together across files.

    for each round:
        requests   build each hole's (prefix, suffix); a key found in the journal is skipped
        batches    distinct requests, longest first, `batch` at a time
        run        a runner turns batches into outcomes, in any order (local engine or Ray)
        record     fills go to the journal (fsync'd) as each batch finishes; a file whose
                   holes are all settled is written at once (atomically)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Protocol

from tqdm import tqdm

from fim_server.wire.options import DecodeConfig
from fim_server.engine.types import InfillRequest
from . import holes as H
from .holes import MARKER
from .inputs import Inputs, SourceFile, Task
from .journal import Journal, request_key

FILLED, SKIPPED, FAILED = "filled", "skipped", "failed"


@dataclass(frozen=True)
class InfillOptions:
    marker: str = MARKER
    batch: int = 8                       # requests per engine call
    max_file_bytes: int = 1 << 20        # larger files (and task lines) are refused
    in_place: bool = False               # rewrite the input files
    out_dir: Optional[Path] = None       # write filled files here, mirroring the inputs' tree
    diff: Optional[str] = None           # unified diff to this path ("-": stdout)
    jsonl: Optional[str] = None          # one record per hole to this path ("-": stdout)
    state_dir: Optional[Path] = None     # journal.jsonl and summary.json; None: nothing kept
    progress: bool = True                # tqdm bar on stderr


# ---------------------------------------------------------------- engine side

def run_batch(engine, requests: list[InfillRequest], config: DecodeConfig) -> list[dict]:
    """One outcome per request: {"text", "stats"} or {"error"}. A failing batch is retried one
    request at a time, so one bad request does not fail its batch mates."""
    try:
        return [{"text": r.text, "stats": r.stats.to_dict()} for r in engine.infill(requests, config)]
    except Exception as exc:            # noqa: BLE001 - reported per hole, the job goes on
        if len(requests) == 1:
            return [{"error": f"engine error: {type(exc).__name__}: {exc}"}]
    return [run_batch(engine, [r], config)[0] for r in requests]


class Runner(Protocol):
    def run(self, batches: list[list[InfillRequest]]) -> Iterator[tuple[int, list[dict]]]:
        """(batch index, outcomes) for every batch, in any order."""


class LocalRunner:
    """The engine in this process, batch after batch."""

    def __init__(self, engine, config: DecodeConfig):
        self.engine, self.config = engine, config

    def run(self, batches: list[list[InfillRequest]]) -> Iterator[tuple[int, list[dict]]]:
        for i, batch in enumerate(batches):
            yield i, run_batch(self.engine, batch, self.config)


# ---------------------------------------------------------------- units of work

@dataclass
class Unit:
    """A file with holes, or one JSONL task (a single hole with a fixed context)."""

    name: str
    source: Optional[SourceFile] = None
    task: Optional[Task] = None
    fills: list = field(default_factory=list)        # per hole: text, or None (pending / failed)
    status: list = field(default_factory=list)       # per hole: "" while pending, else FILLED | SKIPPED | FAILED
    stats: list = field(default_factory=list)        # per hole: engine stats dict, or None
    messages: list = field(default_factory=list)     # per hole: "" or what went wrong
    finished: bool = False                           # handed to on_unit_done

    def __post_init__(self) -> None:
        n = len(self.source.holes) if self.source else 1
        self.fills, self.status, self.stats, self.messages = [None] * n, [""] * n, [None] * n, [""] * n

    @property
    def n_holes(self) -> int:
        return len(self.status)

    @property
    def done(self) -> bool:
        return all(self.status)

    def request(self, k: int) -> tuple[str, str]:
        if self.task is not None:
            return self.task.prefix, self.task.suffix
        return H.context(self.source.text, self.source.holes, self.fills, k)

    def where(self, k: int) -> str:
        if self.task is not None:
            return f"task {self.name}"
        h = self.source.holes[k]
        return f"{self.name}:{h.line}:{h.column}"

    def settle(self, k: int, status: str, outcome: dict) -> None:
        self.status[k] = status
        if "error" in outcome:
            self.messages[k] = outcome["error"]
            return
        self.fills[k], self.stats[k] = outcome["text"], outcome["stats"]
        if outcome["stats"].get("truncated"):
            self.messages[k] = (f"context truncated to fit the model's budget "
                                f"({outcome['stats'].get('prompt_tokens', '?')} prompt tokens kept)")

    def filled_text(self) -> str:
        return H.fill(self.source.text, self.source.holes, self.fills)


def make_units(inputs: Inputs) -> list[Unit]:
    return ([Unit(f.rel, source=f) for f in inputs.files] +
            [Unit(t.id, task=t) for t in inputs.tasks])


# ---------------------------------------------------------------- the job

@dataclass
class Pending:
    key: str
    request: InfillRequest
    holes: list = field(default_factory=list)        # (unit, k) waiting for this request


def make_batches(pending: list[Pending], size: int) -> list[list[Pending]]:
    """Longest first (similar lengths share a batch; the biggest batch runs first, so a memory
    problem shows at once); ties keep their order, so the batches are deterministic."""
    ranked = sorted(pending, key=lambda p: -(len(p.request.prefix) + len(p.request.suffix)))
    return [ranked[i:i + size] for i in range(0, len(ranked), size)]


class InfillJob:
    def __init__(self, units: list[Unit], runner: Runner, fingerprint: str, options: InfillOptions,
                 journal: Journal, on_unit_done=None):
        self.units, self.runner, self.fingerprint = units, runner, fingerprint
        self.options, self.journal, self.on_unit_done = options, journal, on_unit_done
        self.computed = 0            # requests the engine answered in this run
        self.failed = 0              # holes that failed in this run
        self.engine_s = 0.0          # wall time of the compute loops (decoding, journal, writes)

    def run(self) -> None:
        total = sum(u.n_holes for u in self.units)
        with tqdm(total=total, unit="hole", desc="infill", disable=not self.options.progress,
                  dynamic_ncols=True) as bar:
            rounds = max((u.n_holes for u in self.units), default=0)
            for r in range(rounds):
                pending = self._requests(r, bar)
                self._finish_units(self.units)          # those settled from the journal alone
                self._compute(make_batches(pending, self.options.batch), bar)

    def _requests(self, r: int, bar) -> list[Pending]:
        """Round r's distinct requests; holes already in the journal are settled as skipped."""
        by_key: dict[str, Pending] = {}
        skipped = 0
        for unit in self.units:
            if unit.n_holes <= r:
                continue
            prefix, suffix = unit.request(r)
            key = request_key(self.fingerprint, prefix, suffix)
            entry = self.journal.get(key)
            if entry is not None:
                unit.settle(r, SKIPPED, entry)
                skipped += 1
                continue
            if key not in by_key:
                by_key[key] = Pending(key, InfillRequest(prefix, suffix, unit.where(r)))
            by_key[key].holes.append((unit, r))
        if skipped:
            bar.total -= skipped         # the bar's rate and ETA count work done in this run only
            bar.refresh()
        return list(by_key.values())

    def _compute(self, batches: list[list[Pending]], bar) -> None:
        if not batches:
            return
        t0 = time.perf_counter()
        for i, outcomes in self.runner.run([[p.request for p in b] for b in batches]):
            entries, touched = [], []
            for p, outcome in zip(batches[i], outcomes):
                ok = "error" not in outcome
                for unit, k in p.holes:
                    unit.settle(k, FILLED if ok else FAILED, outcome)
                    touched.append(unit)
                if ok:
                    entries.append({"key": p.key, "text": outcome["text"], "stats": outcome["stats"]})
                self.failed += 0 if ok else len(p.holes)
                bar.update(len(p.holes))
            self.journal.record(entries)
            self.computed += len(batches[i])
            bar.set_postfix(failed=self.failed, refresh=False)
            self._finish_units(touched)                 # after the journal: a written file is never ahead of it
        self.engine_s += time.perf_counter() - t0

    def _finish_units(self, units: list[Unit]) -> None:
        for unit in units:
            if unit.done and not unit.finished:
                unit.finished = True
                if self.on_unit_done is not None:
                    self.on_unit_done(unit)

