"""How fast does this machine train the bundled architecture? Training tokens per second for
float32 vs bfloat16 autocast, torch threads and batch shape, each measured over the same
optimizer steps (forward, backward, AdamW) on random token ids, one setting after another in
one run. Run before a long training job; the fastest setting goes into its command.

    python -m bench.train_speed --out bench/results/train_speed.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, Qwen2Config

from bench.machine import describe, one_line


def build(hidden: int, layers: int, intermediate: int, heads: int, vocab: int = 4096) -> torch.nn.Module:
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(config).train()


def tokens_per_second(model, batch: int, seq: int, bf16: bool, steps: int, warmup: int = 2) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * seq * steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256x4x768x4",
                   help="comma-separated HIDDENxLAYERSxMLPxHEADS model shapes")
    p.add_argument("--shapes", default="16x256,4x1024,8x1024", help="comma-separated BATCHxSEQ")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rows = []
    for size, shape, threads, bf16 in itertools.product(
            args.sizes.split(","), args.shapes.split(","), args.threads.split(","), (False, True)):
        torch.set_num_threads(int(threads))
        torch.manual_seed(0)
        h, l, m, nh = (int(x) for x in size.split("x"))
        model = build(h, l, m, nh)
        batch, seq = (int(x) for x in shape.split("x"))
        tps = tokens_per_second(model, batch, seq, bf16, args.steps)
        row = {"size": size, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
               "batch": batch, "seq": seq, "threads": int(threads), "dtype": "bf16 autocast" if bf16 else "float32",
               "tokens_per_s": round(tps)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"machine": describe(), "note": "other processes may share the CPU; compare rows of one run only",
              "rows": rows}
    print(one_line(result["machine"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
