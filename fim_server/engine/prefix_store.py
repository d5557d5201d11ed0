"""Cross-request KV reuse: the KV of a document's last prompt, kept for its next request.

When the user types a few characters, the next request for the same document shares most of
its leading tokens with the previous one. The store keeps, per document key, the token ids of
the previous request's leading tokens and their KV; the next request takes the KV of the
longest common token prefix and computes only the rest.

- AR engine and block engine (a causal prompt): a token's KV depends only on the tokens before
  it, so the reuse is exact. Both prefill through `prefill_inputs` and keep what they computed
  with `remember_prompts`.
- Diffusion engine (bidirectional): a prefix token's KV also saw the old middle and suffix. The
  engine's block cache already freezes such KV within a request (Fast-dLLM's approximation);
  reuse extends that approximation across requests. `kv_reuse=False` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import DynamicCache

from fim_server.lru import LRU

from .batching import left_pad
from .kv import RowKV, assemble, new_cache


@dataclass
class _Entry:
    ids: list[int]      # the leading token ids whose KV is stored
    kv: RowKV           # per layer [H, len(ids), D]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixStore:
    """Per-document leading-token KV, least recently used documents evicted past `capacity`.
    Thread-safe: the worker's compute thread stores, its socket thread forgets closed documents."""

    def __init__(self, capacity: int = 16):
        self._entries: LRU[str, _Entry] = LRU(capacity)

    def lookup(self, key: str, ids: list[int], limit: int) -> tuple[int, RowKV | None]:
        """(n, KV of ids[:n]) for the longest prefix of `ids` stored under `key`, n <= limit."""
        if not key or limit <= 0:
            return 0, None
        entry = self._entries.get(key)
        if entry is None:
            return 0, None
        n = min(common_prefix(entry.ids, ids), limit)
        return (n, entry.kv.head(n)) if n > 0 else (0, None)

    def store(self, key: str, ids: list[int], kv: RowKV) -> None:
        if not key or not ids:
            return
        assert kv.length == len(ids), (kv.length, len(ids))
        self._entries.put(key, _Entry(list(ids), kv))

    def forget(self, key: str) -> None:
        """The document was closed: its KV goes at once, not when it is the least recent."""
        self._entries.pop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


def prefill_inputs(prompts: list[list[int]], pasts: list[Optional[RowKV]], pad: int, device: torch.device,
                   config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache]:
    """Input ids, attention mask, position ids and the cache to prefill causal prompts with.

    Without reused KV: whole prompts, left-padded ([B, T] each), and an empty cache. With it:
    each row's reused KV left-padded into the cache ([B, H, C, D]) and only the rest of its prompt
    as input; the mask covers cache + input ([B, C + T]) and may have a gap of padding between
    them, which attention ignores. Positions continue from each row's reused length."""
    reused = [p.length if p is not None else 0 for p in pasts]
    input_ids, mask, positions = left_pad([p[n:] for p, n in zip(prompts, reused)], pad, device)
    if not any(reused):
        return input_ids, mask, positions, new_cache(config)
    some = next(p for p in pasts if p is not None)
    cache, past_valid = assemble([p if p is not None else RowKV.empty_like(some) for p in pasts],
                                 config, left_pad=True)                                 # [B, C]
    positions = positions + torch.tensor(reused, device=positions.device)[:, None]
    return input_ids, torch.cat([past_valid.long(), mask], dim=1), positions, cache


def remember_prompts(store: PrefixStore, rows: list, cache: DynamicCache, mask: torch.Tensor) -> None:
    """Store each keyed, running row's prompt KV (`row.key`, `row.prompt`; the prompt's slots are
    the row's valid entries of `mask` [B, K] after the prefill)."""
    for b, row in enumerate(rows):
        if row.key and not row.done:
            slots = mask[b].nonzero().flatten()                  # [len(prompt)]
            store.store(row.key, row.prompt, RowKV.capture(cache, b, slots))
