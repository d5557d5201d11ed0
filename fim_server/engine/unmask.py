"""Unmask rules: which masked positions of the active block to commit this step.

Every rule takes the confidence of the proposed token at each position and which positions are
still masked, both [B, L] (and the proposal distributions [B, L, V], which only the entropy rule
reads), and returns a bool [B, L] of positions to commit. Every rule commits at least the most
confident masked position of each row that has one, so decoding always moves. `choose` adds the
early-commit step on top of the rule.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from fim_server.wire.options import DecodeConfig


def propose_tokens(logits: torch.Tensor, temperature: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [B, L, V] (float, banned ids at -inf) -> the proposed token and its confidence per
    slot ([B, L] each) and the distribution they come from ([B, L, V]): the argmax, or a sample
    at `temperature` (> 0). The rules below then pick which proposals to commit."""
    if temperature > 0:
        probs = torch.softmax(logits / temperature, dim=-1)
        tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    else:
        probs = torch.softmax(logits, dim=-1)
        conf, tokens = probs.max(dim=-1)
    return tokens, conf, probs


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

    def select(self, conf: torch.Tensor, masked: torch.Tensor, probs=None) -> torch.Tensor:
        return ((conf >= self.tau) & masked) | most_confident(conf, masked)


class FactorRule:
    """Fast-dLLM factor rule: with confidences sorted c_(1) >= c_(2) >= ..., commit the largest
    n such that c_(n) >= 1 - f / (n + 1)."""

    def __init__(self, factor: float):
        self.factor = factor

    def select(self, conf: torch.Tensor, masked: torch.Tensor, probs=None) -> torch.Tensor:
        scores = conf.masked_fill(~masked, -1.0)                  # [B, L]
        ranked, order = scores.sort(dim=1, descending=True)       # [B, L]
        n = torch.arange(1, conf.shape[1] + 1, device=conf.device, dtype=conf.dtype)   # [L]
        passes = ranked >= (1.0 - self.factor / (n + 1))          # [B, L] does c_(n) pass its bar
        # largest n whose c_(n) passes; ranks after the last masked one never pass (score -1)
        idx = torch.where(passes, n, torch.zeros_like(n)).amax(dim=1)    # [B]
        keep_sorted = n[None, :] <= idx[:, None]                  # [B, L] the top idx ranks
        commit = torch.zeros_like(masked).scatter_(1, order, keep_sorted)
        return (commit & masked) | most_confident(conf, masked)


class EntropyBoundRule:
    """EB-sampler (Ben-Hamu et al., 2025): with the masked positions sorted by confidence, commit
    the longest run of the most confident whose entropies sum, less the largest of them, to <= gamma.
    The sum less the max never falls as the run grows, so the passing ranks form a prefix."""

    def __init__(self, gamma: float):
        self.gamma = gamma

    def select(self, conf: torch.Tensor, masked: torch.Tensor, probs=None) -> torch.Tensor:
        if probs is None:
            raise ValueError("the entropy-bounded rule needs the proposal probabilities")
        entropy = torch.special.entr(probs.float()).sum(dim=-1)           # [B, L] nats
        scores = conf.masked_fill(~masked, -1.0)                          # [B, L]
        order = scores.sort(dim=1, descending=True).indices               # [B, L]
        valid = masked.gather(1, order)                                   # [B, L] masked ranks lead
        h = entropy.gather(1, order).masked_fill(~valid, 0.0)             # [B, L]
        excess = h.cumsum(dim=1) - h.cummax(dim=1).values                 # [B, L] sum - max of ranks <= n
        keep_sorted = valid & (excess <= self.gamma)
        commit = torch.zeros_like(masked).scatter_(1, order, keep_sorted)
        return (commit & masked) | most_confident(conf, masked)


def make_rule(config: DecodeConfig):
    if config.unmask == "factor":
        return FactorRule(config.factor)
    if config.unmask == "eb":
        return EntropyBoundRule(config.eb_gamma)
    return ThresholdRule(config.threshold)


def settled_rows(probs: torch.Tensor, masked: torch.Tensor, gap: float) -> torch.Tensor:
    """bool [B]: rows with a masked position, every one of them with top-1 minus top-2 probability >= gap."""
    top = probs.topk(2, dim=-1).values                                    # [B, L, 2]
    passes = (top[..., 0] - top[..., 1] >= gap) | ~masked                 # [B, L]
    return passes.all(dim=1) & masked.any(dim=1)


def choose(rule, conf: torch.Tensor, masked: torch.Tensor, probs: torch.Tensor,
           early_commit: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(commit [B, L], early [B]): the rule's picks, plus, Prophet-style, every masked position of a
    row whose block has settled (see settled_rows; off when early_commit is 0). `early` marks rows
    where that committed more than the rule would have."""
    commit = rule.select(conf, masked, probs)
    if early_commit <= 0:
        return commit, torch.zeros_like(masked[:, 0])
    early = settled_rows(probs, masked, early_commit) & (masked & ~commit).any(dim=1)   # [B]
    return commit | (early[:, None] & masked), early


# (conf [B, L], masked [B, L], probs [B, L, V]) -> (commit [B, L], early [B]): what a step commits
Select = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def selector(config: DecodeConfig) -> Select:
    """The configured unmask rule with early commit on top: the selection of the diffusion
    engines' steps (the speculative drafter wraps its own around `choose`)."""
    return partial(choose, make_rule(config), early_commit=config.early_commit)
