"""Batch infilling throughput (not a test): holes/s of `fim-server infill` at batch sizes 1, 4
and 16, the bundled diffusion model and its AR twin side by side, in one run.

    python -m bench.infill_throughput [--n 24] [--batches 1 4 16] [--repeats 2] [--out bench/results/infill.json]

Each hole is a middle cut reproducibly from the held-out standard-library modules, written as
a file of its own with the marker in place of the middle; the job runs exactly as the command
does (scan, length-sorted batches, a fresh journal, per-hole JSONL). holes/s counts holes over
the job's compute loop (decoding, journal, writes); holes/CPU s over this process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.engine_bench import held_out_cases
from fim_server.wire.options import DecodeConfig
from fim_server.engine import load_engine
from fim_server.batch import InfillOptions, LocalRunner, fingerprint, infill
from fim_server.measure import describe, one_line

NOTE = ("The 2 cores were shared with other jobs while this was measured (the project's training runs "
        "and other helpers' tests and benchmarks; load averages at start and end are recorded): absolute "
        "figures are noisy, compare within the run. One torch thread; holes/CPU s counts only this process.")


def write_tree(root: Path, cases) -> None:
    for i, case in enumerate(cases):
        (root / f"case{i:03d}.py").write_text(case.prefix + "<FILL>" + case.suffix, encoding="utf-8")


def fills(records: Path) -> dict:
    """hole id -> fill, from the job's per-hole JSONL."""
    return {r["id"]: r["completion"] for r in map(json.loads, records.read_text().splitlines())}


def run_one(engine, kind: str, tree: Path, config: DecodeConfig, batch: int, work: Path) -> tuple[dict, dict]:
    """One whole job; holes/s by wall time and by this process's CPU time (the CPU is shared:
    wall time counts the other jobs' turns too, CPU time counts only ours)."""
    name = f"{kind}-b{batch}-{len(list(work.glob(f'{kind}-b{batch}-*.jsonl'))) if work.exists() else 0}"
    opts = InfillOptions(batch=batch, state_dir=work / name, jsonl=str(work / f"{name}.jsonl"), progress=False)
    fp = fingerprint(kind, engine.lm.source, None, None, config)
    cpu0 = time.process_time()
    s = infill([tree], None, LocalRunner(engine, config), fp, opts)     # a fresh journal: nothing skipped
    cpu = time.process_time() - cpu0
    assert s["holes"]["skipped"] == 0 and s["holes"]["failed"] == 0, s["hole_messages"][:3]
    row = {"holes": s["holes"]["filled"], "wall_s": s["time_s"], "cpu_s": round(cpu, 3),
           "holes_per_s": s["holes_per_s"], "holes_per_cpu_s": round(s["holes"]["filled"] / cpu, 3),
           "truncated": s["holes"]["truncated"]}
    return row, fills(work / f"{name}.jsonl")


def summarise(kind: str, batch: int, runs: list[dict], same: float) -> dict:
    return {"engine": kind, "batch": batch, "repeats": len(runs),
            "holes_per_s": statistics.median(r["holes_per_s"] for r in runs),
            "holes_per_cpu_s": statistics.median(r["holes_per_cpu_s"] for r in runs),
            "holes_per_s_runs": [r["holes_per_s"] for r in runs], "same_fills_as_batch_1": same, "runs": runs}


def measure(engines: dict, tree: Path, work: Path, base: DecodeConfig, batches: list[int], repeats: int) -> list[dict]:
    """Batch sizes interleaved (1, 4, 16, 1, 4, 16, ...) so a busy spell on the shared CPU does
    not land on one batch size only; medians over the repeats."""
    rows = []
    for kind, engine in engines.items():
        runs, got = {b: [] for b in batches}, {}
        for _ in range(repeats):
            for b in batches:
                row, got[b] = run_one(engine, kind, tree, base.replace(engine=kind), b, work)
                runs[b].append(row)
        ref = got[batches[0]]
        for b in batches:
            same = round(sum(got[b].get(k) == v for k, v in ref.items()) / len(ref), 3)
            rows.append(summarise(kind, b, runs[b], same))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="holes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=None)
    p.add_argument("--ar-model", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: two threads on cores taken by other jobs spin far more than they work)")
    p.add_argument("--out", default="bench/results/infill.json")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    cases = held_out_cases(args.n, args.seed)
    engines = {"diffusion": load_engine("diffusion", args.model, device=args.device),
               "ar": load_engine("ar", args.ar_model, device=args.device)}
    for e in engines.values():
        e.warmup()
    base = DecodeConfig(max_tokens=args.max_tokens)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tree, work = Path(tmp) / "tree", Path(tmp) / "work"
        tree.mkdir()
        write_tree(tree, cases)
        rows = measure(engines, tree, work, base, args.batches, args.repeats)
    machine = describe(str(engines["diffusion"].lm.device))
    report = {"machine": machine, "notes": NOTE, "load_average_start": load_start, "load_average_end": os.getloadavg(),
              "models": {k: e.lm.source for k, e in engines.items()},
              "context_tokens": {k: e.lm.context_tokens for k, e in engines.items()},
              "config": base.to_dict(), "n_holes": len(cases), "results": rows}
    print(f"\nmachine: {one_line(machine)}   holes: {len(cases)} held-out stdlib middles, "
          f"max {args.max_tokens} tokens, median of {args.repeats} interleaved runs")
    print(NOTE + "\n")
    print(f"{'engine':<11}{'batch':>6}{'holes/s':>9}{'holes/CPU s':>13}{'runs (holes/s)':>24}{'same fills':>12}")
    for r in rows:
        spread = " ".join(f"{x:.2f}" for x in r["holes_per_s_runs"])
        print(f"{r['engine']:<11}{r['batch']:>6}{r['holes_per_s']:>9.2f}{r['holes_per_cpu_s']:>13.2f}"
              f"{spread:>24}{r['same_fills_as_batch_1']:>12.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
