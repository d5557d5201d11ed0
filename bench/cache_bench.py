"""The engines' cache against transformers' DynamicCache (not a test): the same held-out middles
decoded twice per setting, once over each cache, alternating case by case so both see the same
load; ms per forward of the decoding loop and p50 latency, and whether the tokens are the same.

    python -m bench.cache_bench [--n 24] [--max-tokens 48] [--threads N] [--skip-canvas] [--out bench/results/cache.json]

Settings: the AR twin, the block engine (block 4), its lossless mode and the canvas engine (dual
cache with kv_shift). The DynamicCache side swaps `new_cache` for the concatenating cache where
the engines look it up; nothing else changes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import DynamicCache

import fim_server.engine.block as block_module
import fim_server.engine.diffusion as diffusion_module
import fim_server.engine.kv as kv_module
import fim_server.engine.prefix_store as prefix_module
from bench.engine_bench import held_out_cases
from fim_server.measure import percentile
from bench.machine import describe, one_line
from fim_server.engine import InfillRequest, load_engine
from fim_server.wire.options import DecodeConfig

USERS = (kv_module, prefix_module, block_module, diffusion_module)


@contextlib.contextmanager
def concatenating_cache():
    """Every engine builds transformers' DynamicCache (growth by torch.cat) while inside."""
    saved = [module.new_cache for module in USERS]
    plain = lambda config, data=None: DynamicCache(ddp_cache_data=data, config=config)   # noqa: E731
    for module in USERS:
        module.new_cache = plain
    try:
        yield
    finally:
        for module, original in zip(USERS, saved):
            module.new_cache = original


def decode(engine, case, config: DecodeConfig) -> tuple[list[int], int, float, float]:
    t0 = time.perf_counter()
    res = engine.infill([InfillRequest(case.prefix, case.suffix, case.id)], config)[0]
    return res.token_ids, res.stats.nfe, res.stats.decode_ms, (time.perf_counter() - t0) * 1000


def compare(engine, cases, config: DecodeConfig, name: str) -> dict:
    sides = {"reserved": [], "dynamic": []}
    same = 0
    for i, case in enumerate(tqdm(cases, desc=name, leave=False)):
        order = ["reserved", "dynamic"] if i % 2 == 0 else ["dynamic", "reserved"]
        tokens = {}
        for side in order:
            with concatenating_cache() if side == "dynamic" else contextlib.nullcontext():
                tokens[side], nfe, decode_ms, wall = decode(engine, case, config)
            sides[side].append((nfe, decode_ms, wall))
        same += tokens["reserved"] == tokens["dynamic"]
    out = {"setting": name, "cases": len(cases), "same_tokens": same}
    for side, rows in sides.items():
        nfe = sum(r[0] for r in rows)
        out[side] = {"ms_per_forward": sum(r[1] for r in rows) / nfe if nfe else 0.0,
                     "latency_p50_ms": percentile([r[2] for r in rows], 50),
                     "latency_mean_ms": statistics.fmean(r[2] for r in rows)}
    out["ms_per_forward_ratio"] = out["reserved"]["ms_per_forward"] / out["dynamic"]["ms_per_forward"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--skip-canvas", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="bench/results/cache.json")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = held_out_cases(args.n, args.seed)
    base = dict(max_tokens=args.max_tokens, kv_reuse=False)
    block = load_engine("block")
    settings = [("ar", load_engine("ar"), DecodeConfig(engine="ar", **base)),
                ("block/b4", block, DecodeConfig(engine="block", block_size=4, **base)),
                ("lossless/b4", block, DecodeConfig(engine="block", block_size=4, lossless=True, **base))]
    if not args.skip_canvas:
        settings.append(("diffusion/dual+shift", load_engine("diffusion"), DecodeConfig(engine="diffusion", **base)))
    results = []
    for name, engine, config in settings:
        results.append(compare(engine, cases, config, name))
        r = results[-1]
        print(f"{name:22s} ms/fwd {r['reserved']['ms_per_forward']:7.2f} vs {r['dynamic']['ms_per_forward']:7.2f} "
              f"(x{r['ms_per_forward_ratio']:.2f})  p50 {r['reserved']['latency_p50_ms']:7.1f} vs "
              f"{r['dynamic']['latency_p50_ms']:7.1f} ms  same tokens {r['same_tokens']}/{r['cases']}")
    machine = describe()
    print("machine:", one_line(machine))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "cases": len(cases), "max_tokens": args.max_tokens,
                                          "settings": results}, indent=1))
    print("written to", args.out)


if __name__ == "__main__":
    main()
