"""What a cached forward costs by the number of query positions, per dtype (not a test): the
price of a block step (a block of slots, plus a settled block riding along) against an AR step
(one token), for the same model over the same cache.

    python -m bench.forward_cost [--model DIR] [--kind block] [--cache 250] [--queries 1,5,9,17]
                                 [--dtypes float32,bfloat16] [--threads 1] [--out FILE.json]

The dtypes take turns, three rounds of 40 forwards each, and the best round counts (the least
disturbed by whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.machine import describe, one_line
from fim_server.engine.kv import new_cache
from fim_server.models import load_model
from fim_server.models.loader import bundled_path


def forward_ms(lm, prompt_len: int, q: int, repeats: int = 40) -> float:
    """ms per forward of q queries (attending to the cache and each other) over a prompt_len cache."""
    g = torch.Generator().manual_seed(q)
    model, vocab = lm.model, lm.model.config.vocab_size
    cache = new_cache(model.config)
    model(input_ids=torch.randint(10, vocab, (1, prompt_len), generator=g), cache=cache, use_cache=True,
          logits_to_keep=1)
    ids = torch.randint(10, vocab, (1, q), generator=g)
    mask = torch.ones((1, 1, q, prompt_len + q), dtype=torch.bool)
    positions = prompt_len + torch.arange(q)[None]
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(input_ids=ids, cache=cache, attention_mask=mask, position_ids=positions, use_cache=True)
        cache.crop(-q)
    return (time.perf_counter() - t0) / repeats * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the bundled model of --kind")
    p.add_argument("--kind", default="block")
    p.add_argument("--cache", type=int, default=250, help="cached positions (the prompt)")
    p.add_argument("--queries", default="1,5,9,17")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model = args.model or str(bundled_path(args.kind))
    dtypes = args.dtypes.split(",")
    queries = [int(q) for q in args.queries.split(",")]
    lms = {dt: load_model(model, kind=args.kind, dtype=dt) for dt in dtypes}
    best: dict[tuple[str, int], float] = {}
    with torch.inference_mode():
        for _ in range(3):
            for dt, lm in lms.items():
                for q in queries:
                    ms = forward_ms(lm, args.cache, q)
                    best[dt, q] = min(best.get((dt, q), ms), ms)
    machine = describe("cpu")
    print(f"machine: {one_line(machine)}; {model}; cache {args.cache} positions")
    print("queries " + "".join(f"{dt:>22}" for dt in dtypes))
    for q in queries:
        print(f"{q:>7} " + "".join(f"{best[dt, q]:>12.2f} ms x{best[dt, q] / best[dt, 1]:.2f}" if 1 in queries
                                   else f"{best[dt, q]:>19.2f} ms" for dt in dtypes))
    if args.out:
        rows = [{"dtype": dt, "queries": q, "ms": best[dt, q]} for dt in dtypes for q in queries]
        Path(args.out).write_text(json.dumps({"machine": machine, "model": model, "cache": args.cache,
                                              "threads": args.threads, "results": rows}, indent=1))
        print("written to", args.out)


if __name__ == "__main__":
    main()
