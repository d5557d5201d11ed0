"""KV caches: the engines' growing cache, and per-row KV for block reuse.

`new_cache` is the cache every engine decodes over: a DynamicCache whose full-attention layers
write new positions into room reserved ahead (gpt-fast's KVCache, without a fixed maximum)
instead of concatenating, so a step copies its own queries' keys and values, not the whole
cache, and dropping positions (crop) copies nothing.

Each row of a batch keeps its own cached keys/values (the positions outside its active query
range), so a row's cache never depends on what other rows in the batch are doing: batch 1 and
batch N decode the same. A step stacks the rows' caches into one padded cache.
Keys are stored after RoPE (as transformers caches them), so only the queries need positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in buffers [B, H, room, D] with spare room at the end; `keys`
    and `values` are views of the first `length` positions. Writing in place means a view handed
    out earlier may later show other positions: whoever keeps KV past a step clones it
    (RowKV.capture does)."""

    SPARE = 256                                   # positions reserved beyond the first fill

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self.buffers: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions [B, H, q, D] after the cached ones; return all of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self.buffers is None or end > self.buffers[0].shape[-2]:
            self._grow(key_states, value_states, end)
        keys, values = self.buffers
        keys[..., self.length:end, :] = key_states
        values[..., self.length:end, :] = value_states
        self._view(end)
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, need: int) -> None:
        """New buffers with room for `need` positions and more (a quarter, at least SPARE); the
        cached positions are copied over."""
        room = need + max(self.SPARE, need // 4)
        fresh = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty((*new.shape[:-2], room, new.shape[-1]))
            if self.length:
                buffer[..., :self.length, :] = old
            fresh.append(buffer)
        self.buffers = tuple(fresh)

    def _view(self, length: int) -> None:
        self.length = length
        self.keys = self.buffers[0][..., :length, :]
        self.values = self.buffers[1][..., :length, :]

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last -tokens_to_remove positions (a negative count, as DynamicLayer takes)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of positions to drop, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self._view(max(0, self.length + tokens_to_remove))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep batch rows `indices`: one copy of the buffers."""
        if self.is_initialized and self.buffers is not None:
            self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
            self._view(self.length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self.buffers is not None:
            self.buffers = (self.buffers[0].repeat_interleave(repeats, dim=0),
                            self.buffers[1].repeat_interleave(repeats, dim=0))
            self._view(self.length)

    def reset(self) -> None:
        super().reset()                               # drops keys and values, is_initialized = False
        self.buffers, self.length = None, 0


def keep_positions(cache: DynamicCache, start: int, keep: list[int]) -> None:
    """Of the cached positions from `start` on, keep those at offsets `keep` (ascending), packed
    at start, start + 1, ...; the rest are dropped (a verified branch of a token tree)."""
    index = start + torch.tensor(keep, dtype=torch.long)
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        index = index.to(layer.keys.device)
        if isinstance(layer, ReservedLayer):
            for buffer in layer.buffers:
                buffer[..., start:start + len(keep), :] = buffer[..., index, :]      # the gather copies first
            layer._view(start + len(keep))
        elif type(layer) is DynamicLayer:
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., index, :]], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., index, :]], dim=-2)
        else:                     # a sliding window keeps its own count of positions seen
            raise ValueError(f"cannot keep chosen positions of a {type(layer).__name__} cache layer")


def new_cache(config, data: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None) -> DynamicCache:
    """An empty cache for `config`'s model (or filled with per-layer (keys, values) [B, H, K, D],
    copied), whose full-attention layers are ReservedLayers; other layer kinds (sliding windows)
    stay as transformers builds them."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    for layer, (keys, values) in zip(cache.layers, data or []):
        layer.update(keys, values)
    return cache


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
    layer's keys and values, so a lone row that needs no padding is a view, not a copy (new_cache
    copies it into its own buffers and never writes into the tensors it is given); any other
    batch costs one more copy."""
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
    return new_cache(config, data), valid


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
