"""Engine benchmark (not a test): NFE, tokens per forward, ms per forward and latency for the
canvas diffusion engine with cache none / prefix / dual (with and without kv_shift), the block
diffusion engine (when a block model is given or bundled) and the AR baseline, on the same
inputs, in one run.

    python -m bench.engine_bench [--n 24] [--model DIR] [--ar-model DIR] [--block-model DIR]
                                 [--block-sizes 4,8] [--lossless-sizes 4,8] [--skip-canvas]
                                 [--out bench/results/engine.json]

Cases are cut reproducibly from the standard-library modules held out of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench.machine import describe, one_line
from bench.metrics import edit_similarity, exact_match
from bench.repo_cases import SourceFile, sample_cases
from fim_server.wire.options import DecodeConfig
from fim_server.train.data import collect_sources
from fim_server.engine import InfillRequest, load_engine
from fim_server.measure import percentile
from fim_server.models.loader import bundled_path


def held_out_cases(n: int, seed: int):
    _, held, _ = collect_sources()
    sources = [SourceFile(s.path, s.text) for s in held]
    return sample_cases(sources, n, seed, kinds=("line", "block", "midline"), suite="stdlib-held-out")


def run_setting(engine, cases, config: DecodeConfig, name: str) -> dict:
    rows = []
    for case in tqdm(cases, desc=name, leave=False):
        t0 = time.perf_counter()
        res = engine.infill([InfillRequest(case.prefix, case.suffix, case.id)], config)[0]
        wall = (time.perf_counter() - t0) * 1000
        rows.append({"nfe": res.stats.nfe, "tokens": res.stats.tokens, "latency_ms": wall,
                     "decode_ms": res.stats.decode_ms,
                     "em": exact_match(res.text, case.middle), "es": edit_similarity(res.text, case.middle)})
    nfe = sum(r["nfe"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    lat = [r["latency_ms"] for r in rows]
    return {"setting": name, "cases": len(rows), "nfe_mean": nfe / len(rows),
            "tokens_per_forward": tokens / nfe if nfe else 0.0, "tokens_mean": tokens / len(rows),
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
            "latency_mean_ms": statistics.fmean(lat),
            # the decoding loop's time per forward: model plus per-step overhead, without set-up
            "ms_per_forward": sum(r["decode_ms"] for r in rows) / nfe if nfe else 0.0,
            "exact_match": statistics.fmean(r["em"] for r in rows),
            "edit_similarity": statistics.fmean(r["es"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None)
    p.add_argument("--ar-model", default=None)
    p.add_argument("--block-model", default=None, help="block-diffusion model (default: the bundled one, if any)")
    p.add_argument("--block-sizes", default="8", help="comma-separated block sizes for the block engine")
    p.add_argument("--lossless-sizes", default="", help="comma-separated block sizes for the block engine's "
                                                         "lossless mode (verified drafts)")
    p.add_argument("--skip-canvas", action="store_true", help="leave out the canvas diffusion settings")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="as fim-server's --dtype (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--out", default="bench/results/engine.json")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = held_out_cases(args.n, args.seed)
    ar = load_engine("ar", args.ar_model, device=args.device, dtype=args.dtype)
    engines = {"ar": ar}
    base = DecodeConfig(max_tokens=args.max_tokens, threshold=args.threshold)
    runs = []                                   # (engine, config, name), the AR baseline last
    if not args.skip_canvas:
        engines["diffusion"] = dlm = load_engine("diffusion", args.model, device=args.device, dtype=args.dtype)
        runs += [(dlm, base.replace(cache="none"), "diffusion/none"),
                 (dlm, base.replace(cache="prefix"), "diffusion/prefix"),
                 (dlm, base.replace(cache="dual", kv_shift=False), "diffusion/dual"),
                 (dlm, base.replace(cache="dual", kv_shift=True), "diffusion/dual+shift")]
    if args.block_model or (bundled_path("block") / "config.json").exists():
        engines["block"] = blk = load_engine("block", args.block_model, device=args.device, dtype=args.dtype)
        runs += [(blk, base.replace(engine="block", block_size=int(b)), f"block/b{int(b)}")
                 for b in args.block_sizes.split(",")]
        runs += [(blk, base.replace(engine="block", block_size=int(b), lossless=True), f"lossless/b{int(b)}")
                 for b in args.lossless_sizes.split(",") if b.strip()]
    runs.append((ar, base.replace(engine="ar"), "ar"))
    for engine in engines.values():
        engine.warmup()
    results = [run_setting(engine, cases, config, name) for engine, config, name in runs]
    machine = describe(str(ar.lm.device))
    report = {"machine": machine, "dtype": str(ar.lm.dtype), "models": {k: e.lm.source for k, e in engines.items()},
              "config": base.to_dict(), "n_cases": len(cases), "results": results}
    print(f"\nmachine: {one_line(machine)}   cases: {len(cases)} held-out stdlib middles\n")
    print(f"{'setting':<22}{'NFE':>7}{'tok/fwd':>9}{'ms/fwd':>8}{'p50 ms':>9}{'p95 ms':>9}{'EM':>7}{'ES':>7}")
    for r in results:
        print(f"{r['setting']:<22}{r['nfe_mean']:>7.1f}{r['tokens_per_forward']:>9.2f}{r['ms_per_forward']:>8.2f}"
              f"{r['latency_p50_ms']:>9.1f}{r['latency_p95_ms']:>9.1f}{r['exact_match']:>7.2f}{r['edit_similarity']:>7.2f}")
    ar = results[-1]
    for r in results[:-1]:
        print(f"{r['setting']} : AR  p50 latency {r['latency_p50_ms'] / ar['latency_p50_ms']:.2f}, "
              f"ms per forward {r['ms_per_forward'] / ar['ms_per_forward']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
