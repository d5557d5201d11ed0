"""Unmask rules: which masked positions of the active block to commit this step.

Every rule takes the confidence of the proposed token at each position and which positions are
still masked, both [B, L], and returns a bool [B, L] of positions to commit. Every rule commits
at least the most confident masked position of each row that has one, so decoding always moves.
"""

from __future__ import annotations

import torch

from ..config import DecodeConfig


def most_confident(conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the single most confident masked position per row (none if no mask left)."""
    scores = conf.masked_fill(~masked, -1.0)                      # [B, L]
    best = scores.argmax(dim=1, keepdim=True)                     # [B, 1]
    pick = torch.zeros_like(masked).scatter_(1, best, True)
    return pick & masked


class ThresholdRule:
    """Fast-dLLM: commit every masked position whose confidence is >= tau."""

    def __init__(self, tau: float):
        self.tau = tau

    def select(self, conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        return ((conf >= self.tau) & masked) | most_confident(conf, masked)


class FactorRule:
    """Fast-dLLM factor rule: with confidences sorted c_(1) >= c_(2) >= ..., commit the largest
    n such that c_(n) >= 1 - f / (n + 1)."""

    def __init__(self, factor: float):
        self.factor = factor

    def select(self, conf: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        scores = conf.masked_fill(~masked, -1.0)                  # [B, L]
        ranked, order = scores.sort(dim=1, descending=True)       # [B, L]
        n = torch.arange(1, conf.shape[1] + 1, device=conf.device, dtype=conf.dtype)   # [L]
        passes = ranked >= (1.0 - self.factor / (n + 1))          # [B, L] does c_(n) pass its bar
        # largest n whose c_(n) passes; ranks after the last masked one never pass (score -1)
        idx = torch.where(passes, n, torch.zeros_like(n)).amax(dim=1)    # [B]
        keep_sorted = n[None, :] <= idx[:, None]                  # [B, L] the top idx ranks
        commit = torch.zeros_like(masked).scatter_(1, order, keep_sorted)
        return (commit & masked) | most_confident(conf, masked)


def make_rule(config: DecodeConfig):
    if config.unmask == "factor":
        return FactorRule(config.factor)
    return ThresholdRule(config.threshold)
