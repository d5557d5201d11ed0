"""Cross-request KV reuse: the KV of a document's last prompt, kept for its next request.

When the user types a few characters, the next request for the same document shares most of
its leading tokens with the previous one. The store keeps, per document key, the token ids of
the previous request's leading tokens and their KV; the next request takes the KV of the
longest common token prefix and computes only the rest.

- AR engine (causal): a token's KV depends only on the tokens before it, so the reuse is exact.
- Diffusion engine (bidirectional): a prefix token's KV also saw the old middle and suffix. The
  engine's block cache already freezes such KV within a request (Fast-dLLM's approximation);
  reuse extends that approximation across requests. `kv_reuse=False` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass

from fim_server.lru import LRU

from .kv import RowKV


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
