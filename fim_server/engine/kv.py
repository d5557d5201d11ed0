"""Per-row KV cache for block reuse.

Each row of a batch keeps its own cached keys/values (the positions outside its active query
range), so a row's cache never depends on what other rows in the batch are doing: batch 1 and
batch N decode the same. A step stacks the rows' caches into one padded DynamicCache.
Keys are stored after RoPE (as transformers caches them), so only the queries need positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
        """Keep cache slots `keep` ([K] long) of batch row `row` from a forward's cache."""
        return cls([(layer.keys[row][:, keep].clone(), layer.values[row][:, keep].clone())
                    for layer in cache.layers])

    @classmethod
    def empty_like(cls, other: "RowKV") -> "RowKV":
        return other.head(0)

    def head(self, n: int) -> "RowKV":
        """The first n positions (views, no copy)."""
        return RowKV([(k[:, :n], v[:, :n]) for k, v in self.layers])

    def clone(self) -> "RowKV":
        return RowKV([(k.clone(), v.clone()) for k, v in self.layers])


def _stack(parts: list[torch.Tensor], kmax: int, left_pad: bool) -> torch.Tensor:
    """Per-row [H, K, D] -> [B, H, Kmax, D], zero-padded. Runs at every cached step for every
    layer's keys and values, so a lone row that needs no padding is a view, not a copy (a
    DynamicCache grows by concatenation and never writes into the tensors it is given); any
    other batch costs one copy."""
    if len(parts) == 1 and parts[0].shape[1] == kmax:
        return parts[0][None]
    heads, _, dim = parts[0].shape
    out = parts[0].new_zeros((len(parts), heads, kmax, dim))
    for b, part in enumerate(parts):
        k = part.shape[1]
        if left_pad:
            out[b, :, kmax - k:] = part
        else:
            out[b, :, :k] = part
    return out


def assemble(rows: list[RowKV], config, left_pad: bool = False) -> tuple[DynamicCache, torch.Tensor]:
    """Stack row caches, right-padded (left-padded for the AR engine's left-padded batches):
    (cache with layers [B, H, Kmax, D], key_valid [B, Kmax])."""
    kmax = max(r.length for r in rows)
    n_layers = len(rows[0].layers)
    data = [(_stack([r.layers[layer][0] for r in rows], kmax, left_pad),
             _stack([r.layers[layer][1] for r in rows], kmax, left_pad)) for layer in range(n_layers)]
    device = rows[0].layers[0][0].device
    valid = torch.zeros((len(rows), kmax), dtype=torch.bool, device=device)
    for b, r in enumerate(rows):
        if left_pad:
            valid[b, kmax - r.length:] = True
        else:
            valid[b, :r.length] = True
    return DynamicCache(ddp_cache_data=data, config=config), valid


def rope_inv_freq(model) -> Optional[torch.Tensor]:
    """The rotary frequencies ([D/2]) when the model applies plain RoPE (angle = position x
    frequency, so rotations compose); None for other position schemes (dynamic scaling, ...)."""
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    rope_type = getattr(rotary, "rope_type", None)
    if rotary is None or rope_type not in ("default", "linear") or getattr(rotary, "attention_scaling", 1.0) != 1.0:
        return None
    return rotary.inv_freq.detach()


def shift_keys(kv: RowKV, start: int, delta: int, inv_freq: torch.Tensor) -> RowKV:
    """Keys of slots [start:] moved by `delta` positions: RoPE stores R(p) k, and
    R(p + d) k = R(d) R(p) k, so each is rotated by d x frequency (rotate-half layout)."""
    angle = delta * inv_freq.to(torch.float64)                              # [D/2]
    cos, sin = torch.cat([angle.cos(), angle.cos()]), torch.cat([angle.sin(), angle.sin()])   # [D]
    layers = []
    for k, v in kv.layers:                                                  # [H, K, D]
        behind = k[:, start:].to(torch.float64)
        half = behind.shape[-1] // 2
        rotated = torch.cat([-behind[..., half:], behind[..., :half]], dim=-1)
        moved = (behind * cos.to(k.device) + rotated * sin.to(k.device)).to(k.dtype)
        layers.append((torch.cat([k[:, :start], moved], dim=1), v))
    return RowKV(layers)
