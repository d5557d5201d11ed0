"""Count the lossless mode's next-token table (engine/ngrams.py) on the training split.

    python -m fim_server.train.ngrams --corpus runs/corpus --model fim_server/bundled/fim-tiny-block
        [--tokens 40000000] [--min-count 20] [--seed 0]

Reads the same training split as `fim-server train` (`collect_sources`: the excluded projects,
HumanEval files and held-out packages never enter), tokenizes files in a seeded random order
until `--tokens` tokens, and keeps, for each 3- and 2-token context seen at least `--min-count`
times, the token that most often followed it. Writes `draft_ngrams.safetensors` into the model
directory (its tokenizer is the one counted with).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm
from transformers import AutoTokenizer

from fim_server.engine.ngrams import FILE, ORDERS, NgramTable, context_keys, fingerprint

from .data import collect_sources

FILES_PER_BATCH = 256


def most_frequent_next(token_arrays: list[np.ndarray], n: int, vocab: int,
                       min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(contexts, next tokens), sorted by context: for every n-token context followed by some
    token at least `min_count` times, the token that followed it most often (ties: the lower id)."""
    pairs = [context_keys(a, n + 1, vocab) for a in token_arrays if len(a) > n]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    keys, counts = np.unique(np.concatenate(pairs), return_counts=True)    # (context, next) pairs, sorted
    ctx, nxt = keys // vocab, keys % vocab
    order = np.lexsort((nxt, -counts, ctx))              # by context, then most frequent first
    ctx, nxt, counts = ctx[order], nxt[order], counts[order]
    first = np.ones(len(ctx), dtype=bool)
    first[1:] = ctx[1:] != ctx[:-1]
    keep = first & (counts >= min_count)
    return ctx[keep], nxt[keep].astype(np.int32)


def corpus_tokens(texts: list[str], tokenizer, limit: int, seed: int) -> list[np.ndarray]:
    """Token arrays of the texts in a seeded random order, until `limit` tokens."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    arrays, total = [], 0
    with tqdm(total=limit, desc="tokenize", unit="tok", unit_scale=True, mininterval=5) as bar:
        for i in range(0, len(order), FILES_PER_BATCH):
            batch = [texts[j] for j in order[i:i + FILES_PER_BATCH]]
            for enc in tokenizer._tokenizer.encode_batch(batch, add_special_tokens=False):
                arrays.append(np.asarray(enc.ids, dtype=np.int64))
                total += len(enc.ids)
            bar.update(min(limit, total) - bar.n)
            if total >= limit:
                break
    return arrays


def build(texts: list[str], tokenizer, limit: int, min_count: int, seed: int = 0) -> NgramTable:
    vocab = len(tokenizer)
    arrays = corpus_tokens(texts, tokenizer, limit, seed)
    tables = {n: most_frequent_next(arrays, n, vocab, min_count) for n in ORDERS}
    return NgramTable(tables, vocab, fingerprint(tokenizer))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory: its tokenizer; the table is written there")
    p.add_argument("--corpus", default=None, help="a package corpus (python -m fim_server.train.packages)")
    p.add_argument("--tokens", type=int, default=40_000_000, help="training tokens to count")
    p.add_argument("--min-count", type=int, default=20, help="keep contexts seen at least this often")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tokens <= 0 or args.min_count <= 0:
        p.error("--tokens and --min-count must be positive")
    model = Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    train, _, report = collect_sources(corpus=Path(args.corpus) if args.corpus else None)
    table = build([s.text for s in train], tokenizer, args.tokens, args.min_count, args.seed)
    table.save(model / FILE)
    sizes = ", ".join(f"{len(ctx)} {n}-token contexts" for n, (ctx, _) in table.tables.items())
    print(f"{model / FILE}: {sizes} (from {report['train']} training files)")


if __name__ == "__main__":
    main()
