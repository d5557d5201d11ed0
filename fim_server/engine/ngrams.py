"""A next-token table counted on a model's training corpus: the lossless mode chains it into one
more draft branch (REST, He et al. 2024, drafts from a datastore of corpus text; here the
datastore is reduced to the most frequent token after each frequent 3- and 2-token context).

The file `draft_ngrams.safetensors` sits beside the weights; `python -m fim_server.train.ngrams`
writes it. Tensors (sorted by context, one row per context):

    ctx3  int64 [N3]   the context t1 t2 t3 as ((t1 * V) + t2) * V + t3, V = vocab_size
    next3 int32 [N3]   the token that most often followed it
    ctx2  int64 [N2], next2 int32 [N2]   the same for 2-token contexts (used when no 3-token one matches)

Metadata: `vocab_size`, and `tokenizer`, a fingerprint of the tokenizer it was counted with
(`fingerprint`): a table counted with another tokenizer would propose wrong ids, so loading it
for such a model is an error. The drafts only save forwards; the lossless mode's verification
keeps the output the network's own greedy decoding whatever the table says.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

FILE = "draft_ngrams.safetensors"
ORDERS = (3, 2)                      # longest context first


def fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary (token -> id)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=True)
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]


def context_keys(tokens: np.ndarray, n: int, vocab: int) -> np.ndarray:
    """int64 [len - n + 1]: the key of every n-token window of `tokens` (base-`vocab` digits)."""
    keys = np.zeros(len(tokens) - n + 1, dtype=np.int64)
    for j in range(n):
        keys = keys * vocab + tokens[j:len(tokens) - n + 1 + j]
    return keys


class NgramTable:
    """order n -> (sorted context keys, next tokens)."""

    def __init__(self, tables: dict[int, tuple[np.ndarray, np.ndarray]], vocab_size: int, tokenizer: str):
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.tables = {n: (np.asarray(ctx, dtype=np.int64), np.asarray(nxt, dtype=np.int32))
                       for n, (ctx, nxt) in tables.items()}
        # Python lists: bisect on a list is ~5x faster than np.searchsorted for one key
        self._lists = {n: (ctx.tolist(), nxt.tolist()) for n, (ctx, nxt) in self.tables.items()}

    def __len__(self) -> int:
        return sum(len(ctx) for ctx, _ in self.tables.values())

    def next_token(self, tokens: list[int]) -> Optional[int]:
        """The most frequent token after the longest context that ends `tokens`, None if none."""
        for n in ORDERS:
            if n not in self._lists or len(tokens) < n:
                continue
            key = 0
            for t in tokens[-n:]:
                key = key * self.vocab_size + t
            ctx, nxt = self._lists[n]
            i = bisect.bisect_left(ctx, key)
            if i < len(ctx) and ctx[i] == key:
                return nxt[i]
        return None

    def chain(self, tokens: list[int], length: int) -> list[int]:
        """Up to `length` tokens: the table's next token, appended and asked again."""
        seq = list(tokens[-max(ORDERS):])
        out: list[int] = []
        for _ in range(length):
            token = self.next_token(seq)
            if token is None:
                break
            out.append(token)
            seq = seq[1:] + [token]
        return out

    def save(self, path: str | Path) -> None:
        tensors = {}
        for n, (ctx, nxt) in self.tables.items():
            tensors[f"ctx{n}"], tensors[f"next{n}"] = ctx, nxt
        save_file(tensors, str(path), metadata={"vocab_size": str(self.vocab_size), "tokenizer": self.tokenizer})

    @classmethod
    def load(cls, path: str | Path) -> "NgramTable":
        """The table at `path`; ValueError naming the file when it is not a valid table."""
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            vocab, tok = int(meta["vocab_size"]), str(meta["tokenizer"])
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a next-token table ({e})") from e
        tables = {}
        for n in ORDERS:
            if f"ctx{n}" not in tensors:
                continue
            ctx, nxt = tensors[f"ctx{n}"], tensors.get(f"next{n}")
            if (nxt is None or ctx.shape != nxt.shape or ctx.ndim != 1 or np.any(np.diff(ctx) <= 0)
                    or (len(nxt) and (nxt.min() < 0 or nxt.max() >= vocab))):
                raise ValueError(f"{path}: ctx{n}/next{n} are not sorted contexts and tokens below {vocab}")
            tables[n] = (ctx, nxt)
        if not tables:
            raise ValueError(f"{path}: holds no ctx2 or ctx3 table")
        return cls(tables, vocab, tok)


def table_for(source: str, tokenizer) -> Optional[NgramTable]:
    """The table beside a local checkpoint's weights, None when there is none (a hub id, or a
    checkpoint without one); ValueError when it was counted with another tokenizer."""
    path = Path(source) / FILE
    if not path.is_file():
        return None
    table = NgramTable.load(path)
    if table.tokenizer != fingerprint(tokenizer) or table.vocab_size != len(tokenizer):
        raise ValueError(f"{path} was counted with another tokenizer than this model's: rebuild it with "
                         "`python -m fim_server.train.ngrams` or delete it")
    return table
