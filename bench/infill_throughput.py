"""Batch infilling throughput (not a test): holes/s of `fim-server infill` at batch sizes 1, 4
and 16, the bundled diffusion model and its AR twin side by side, in one run.

    python -m bench.infill_throughput [--n 48] [--batches 1 4 16] [--out bench/results/infill.json]

Each hole is a middle cut reproducibly from the held-out standard-library modules, written as
a file of its own with the marker in place of the middle; the job runs exactly as the command
does (scan, length-sorted batches, journal in memory, no outputs written). holes/s counts
holes over the time spent in the engine; wall_s adds scanning and bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.engine_bench import held_out_cases
from fim_server.config import DecodeConfig
from fim_server.engine import load_engine
from fim_server.infill import InfillOptions, LocalRunner, fingerprint, infill
from fim_server.infill.journal import Journal
from fim_server.machine import describe, one_line

NOTE = ("CPU shared with two `fim-server train` jobs running at high priority on the same 2 cores "
        "while this was measured: absolute figures are low and noisy; compare within the run.")


def write_tree(root: Path, cases) -> None:
    for i, case in enumerate(cases):
        (root / f"case{i:03d}.py").write_text(case.prefix + "<FILL>" + case.suffix, encoding="utf-8")


def fills(state: Path) -> dict:
    return {k: e["text"] for k, e in Journal(state / "journal.jsonl").entries.items()}


def run_one(engine, kind: str, tree: Path, config: DecodeConfig, batch: int, work: Path) -> tuple[dict, dict]:
    state = work / f"{kind}-b{batch}"            # a fresh journal each time: nothing is skipped
    opts = InfillOptions(batch=batch, state_dir=state, progress=False)
    fp = fingerprint(kind, engine.lm.source, None, None, config)
    s = infill([tree], None, LocalRunner(engine, config), fp, opts)
    assert s["holes"]["skipped"] == 0 and s["holes"]["failed"] == 0, s["hole_messages"][:3]
    row = {"engine": kind, "batch": batch, "holes": s["holes"]["filled"], "engine_s": s["engine_s"],
           "wall_s": s["time_s"], "holes_per_s": s["holes_per_s"], "truncated": s["holes"]["truncated"]}
    return row, fills(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="holes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--model", default=None)
    p.add_argument("--ar-model", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--out", default="bench/results/infill.json")
    args = p.parse_args()

    cases = held_out_cases(args.n, args.seed)
    engines = {"diffusion": load_engine("diffusion", args.model, device=args.device),
               "ar": load_engine("ar", args.ar_model, device=args.device)}
    for e in engines.values():
        e.warmup()
    base = DecodeConfig(max_tokens=args.max_tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree, work = Path(tmp) / "tree", Path(tmp) / "work"
        tree.mkdir()
        write_tree(tree, cases)
        for kind, engine in engines.items():
            first = None
            for batch in args.batches:
                row, got = run_one(engine, kind, tree, base.replace(engine=kind), batch, work)
                first = first or got
                row["same_fills_as_first_batch_size"] = round(
                    sum(got.get(k) == v for k, v in first.items()) / len(first), 3)
                rows.append(row)
    machine = describe(str(engines["diffusion"].lm.device))
    report = {"machine": machine, "notes": NOTE,
              "models": {k: e.lm.source for k, e in engines.items()},
              "context_tokens": {k: e.lm.context_tokens for k, e in engines.items()},
              "config": base.to_dict(), "n_holes": len(cases), "results": rows}
    print(f"\nmachine: {one_line(machine)}   holes: {len(cases)} held-out stdlib middles, max {args.max_tokens} tokens")
    print(NOTE + "\n")
    print(f"{'engine':<11}{'batch':>6}{'holes/s':>9}{'engine s':>10}{'wall s':>8}{'same fills':>12}")
    for r in rows:
        print(f"{r['engine']:<11}{r['batch']:>6}{r['holes_per_s']:>9.2f}{r['engine_s']:>10.1f}{r['wall_s']:>8.1f}"
              f"{r['same_fills_as_first_batch_size']:>12.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
