"""Where the lossless mode's drafts pay (not a test): tokens per forward and latency of the
block coder's lossless mode by number of lookup candidates, by length of the next-token table's
chain, with and without lookup, against the AR twin, on the same HumanEval (and repository)
middles, the settings taking turns case by case so that whatever else the machine does falls on
all of them alike.

    python -m bench.lossless_drafts [--single 150] [--multi 60] [--candidates 1,2,3,4]
                                    [--ngram 0,4,8] [--setting 'block lookup=12'] [--repo 50] [--threads 1] [--dtype bfloat16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench.humaneval import load_humaneval_infilling
from bench.machine import describe, one_line
from bench.model_eval import evenly
from bench.pinned_repos import ensure_pinned
from bench.repo_cases import sample_repo_cases
from bench.settings import parse_setting
from fim_server.engine import InfillRequest, load_engine
from fim_server.measure import percentile
from fim_server.wire.options import DecodeConfig


def settings(args, multi: bool) -> dict[str, DecodeConfig]:
    """Setting name -> config: the AR twin, lossless by lookup candidates (the other options at
    their defaults), by length of the next-token table's chain (0: no table), without lookup."""
    base = dict(max_tokens=64, single_line=not multi, context_tokens=args.context, kv_reuse=False)
    out = {"ar": DecodeConfig(engine="ar", **base)}
    for k in args.candidates:
        out[f"lossless, {k} candidates"] = DecodeConfig(engine="block", block_size=4, lossless=True,
                                                        lookup_candidates=k, **base)
    for n in args.ngram:
        out[f"lossless, table chain {n}"] = DecodeConfig(engine="block", block_size=4, lossless=True, ngram=n, **base)
    out["lossless, no lookup"] = DecodeConfig(engine="block", block_size=4, lossless=True, lookup=0, **base)
    for spec in args.setting:       # 'block lookup=12 lookup_candidates=5': lossless, these options changed
        setting = parse_setting(spec, {})
        out[f"lossless, {' '.join(f'{k}={v}' for k, v in setting.options)}"] = DecodeConfig(
            engine="block", block_size=4, lossless=True, **base).replace(**dict(setting.options))
    return out


def run_suite(engines: dict, cases: list, configs: dict[str, DecodeConfig], name: str) -> list[dict]:
    times = {s: [] for s in configs}
    nfe = dict.fromkeys(configs, 0)
    tokens = dict.fromkeys(configs, 0)
    for case in tqdm(cases, desc=name, mininterval=5):
        for s, config in configs.items():
            req = InfillRequest(case.prefix, case.suffix, case.id)
            t0 = time.perf_counter()
            res = engines[config.engine].infill([req], config)[0]
            times[s].append((time.perf_counter() - t0) * 1000)
            nfe[s] += res.stats.nfe
            tokens[s] += res.stats.tokens
    ar_p50 = percentile(times["ar"], 50)
    return [{"setting": s, "cases": len(cases), "tokens_per_forward": tokens[s] / nfe[s],
             "nfe_mean": nfe[s] / len(cases), "latency_p50_ms": percentile(times[s], 50),
             "latency_mean_ms": statistics.fmean(times[s]), "p50_x_ar": percentile(times[s], 50) / ar_p50}
            for s in configs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=150, help="HumanEval single-line middles")
    parser.add_argument("--multi", type=int, default=60, help="HumanEval multi-line middles")
    parser.add_argument("--candidates", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 3, 4])
    parser.add_argument("--ngram", type=lambda t: [int(x) for x in t.split(",")], default=[],
                        help="next-token table chain lengths to compare (0 = no table), e.g. 0,4,8")
    parser.add_argument("--setting", action="append", default=[], metavar="'block OPTION=V ...'",
                        help="one more lossless setting with these options changed (repeatable)")
    parser.add_argument("--repo", type=int, default=0, help="repository middles (fim-bench's repo suite); 0 = none")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engines = {"ar": load_engine("ar", dtype=args.dtype), "block": load_engine("block", dtype=args.dtype)}
    report = {"machine": describe(str(engines["ar"].lm.device)), "dtype": args.dtype, "threads": args.threads,
              "context_tokens": args.context, "suites": {}}
    print(one_line(report["machine"]))
    suites = [("humaneval single-line", False, lambda: evenly(load_humaneval_infilling(multi_line=False), args.single)),
              ("humaneval multi-line", True, lambda: evenly(load_humaneval_infilling(multi_line=True), args.multi))]
    if args.repo:       # fim-bench's repository suite: the pinned projects, seed 0
        suites.append(("repository", True, lambda: sample_repo_cases(ensure_pinned(), args.repo, 0)))
    for name, multi, cases in suites:
        rows = run_suite(engines, cases(), settings(args, multi), name)
        report["suites"][name] = rows
        print(name)
        for r in rows:
            print(f"  {r['setting']:26s} tok/fwd {r['tokens_per_forward']:.2f}  NFE {r['nfe_mean']:.2f}  "
                  f"p50 {r['latency_p50_ms']:.1f} ms ({r['p50_x_ar']:.2f}x AR)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
