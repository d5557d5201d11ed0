"""Per-row KV cache for block reuse.

Each row of a batch keeps its own cached keys/values (the positions outside its active query
range), so a row's cache never depends on what other rows in the batch are doing: batch 1 and
batch N decode the same. A step stacks the rows' caches into one padded DynamicCache.
Keys are stored after RoPE (as transformers caches them), so only the queries need positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class RowKV:
    layers: list[tuple[torch.Tensor, torch.Tensor]]   # per layer (keys, values), each [H, K, D]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[1] if self.layers else 0

    @classmethod
    def capture(cls, cache: DynamicCache, row: int, keep: torch.Tensor) -> "RowKV":
        """Keep positions `keep` ([K] long) of batch row `row` from a full-forward cache."""
        return cls([(layer.keys[row][:, keep].clone(), layer.values[row][:, keep].clone())
                    for layer in cache.layers])


def assemble(rows: list[RowKV], config) -> tuple[DynamicCache, torch.Tensor]:
    """Stack row caches, right-padded: (cache with layers [B, H, Kmax, D], key_valid [B, Kmax])."""
    kmax = max(r.length for r in rows)
    n_layers = len(rows[0].layers)
    data = []
    for layer in range(n_layers):
        keys, values = [], []
        for r in rows:
            k, v = r.layers[layer]                       # [H, K, D]
            pad = kmax - k.shape[1]
            keys.append(torch.nn.functional.pad(k, (0, 0, 0, pad)))
            values.append(torch.nn.functional.pad(v, (0, 0, 0, pad)))
        data.append((torch.stack(keys), torch.stack(values)))
    device = rows[0].layers[0][0].device
    valid = torch.zeros((len(rows), kmax), dtype=torch.bool, device=device)
    for b, r in enumerate(rows):
        valid[b, :r.length] = True
    return DynamicCache(ddp_cache_data=data, config=config), valid
