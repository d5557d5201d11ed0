"""Rows of different lengths as one batch: the padding every engine's forward is built from."""

from __future__ import annotations

import torch


def pad_batch(seqs: list[list[int]], pad: int, device: torch.device,
              left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences -> (values [B, T] long, valid [B, T] bool), right-padded with `pad` (left-padded
    when `left`). Built on the CPU and moved once: one copy per batch, not one per row."""
    width = max(len(s) for s in seqs)
    values = torch.full((len(seqs), width), pad, dtype=torch.long)       # [B, T]
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)            # [B, T]
    for b, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        values[b, cols] = torch.tensor(s, dtype=torch.long)
        valid[b, cols] = True
    return values.to(device), valid.to(device)


def left_pad(prompts: list[list[int]], pad: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal prompts -> input ids, attention mask (long) and position ids, each [B, T], left-padded.
    Positions count each row's own tokens from 0, so padding never moves a token."""
    input_ids, valid = pad_batch(prompts, pad, device, left=True)
    mask = valid.long()
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)                  # [B, T]
    return input_ids, mask, positions
