"""Decoding options: one frozen dataclass that travels with every request."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENGINES = ("diffusion", "ar", "speculative")
CACHE_MODES = ("none", "prefix", "dual")
UNMASK_RULES = ("threshold", "factor", "eb")
LENGTH_POLICIES = ("auto", "expand", "fixed")


@dataclass(frozen=True)
class DecodeConfig:
    engine: str = "diffusion"      # diffusion | ar | speculative (diffusion drafts, AR verifies)
    max_tokens: int = 64           # cap on middle tokens (the canvas never grows past it)
    single_line: bool = False      # stop at the end of the first line of the middle
    temperature: float = 0.0       # 0 = greedy
    seed: int = 0                  # used only when temperature > 0
    context_tokens: int = 0        # prefix + suffix budget in tokens; 0 = the model's own limit
    kv_reuse: bool = True          # reuse the KV of the tokens a request shares with the document's previous one
    # diffusion only
    block_size: int = 8            # semi-autoregressive block length (canvas positions); 8 measured faster
                                   # and better than 32 with the bundled twin (bench/results/modes-*)
    cache: str = "dual"            # none | prefix | dual
    refresh_every: int = 0         # recompute the cache every N steps inside a block; 0 = at block start only
    kv_shift: bool = True          # dual: after an expand/delete in the block, re-rotate the cached keys behind it
                                   # to their new positions instead of a full refresh (plain-RoPE models; else refresh)
    unmask: str = "threshold"      # threshold | factor | eb
    threshold: float = 0.9         # tau: commit every masked position with confidence >= tau
    factor: float = 1.0            # f: commit the largest n with c_(n) >= 1 - f / (n + 1)
    eb_gamma: float = 0.1          # eb: commit the most confident while their entropy sum less the largest <= gamma (nats)
    early_commit: float = 0.0      # commit the whole block once every masked top1 - top2 probability gap >= this; 0 = off
    length: str = "auto"           # auto (expand if the model can) | expand | fixed (over-allocate + end fill)
    initial_length: int = 16       # starting canvas for the expand/delete policy
    max_steps: int = 0             # hard cap on denoising steps per request; 0 = 4 * max_tokens
    end_guard: bool = True         # end/delete tokens only at the first undecided slot, after >= 1 token: a settled end
                                   # closes the middle (prevents the end-token over-commit collapse)
    # speculative only (the diffusion options above shape the draft)
    draft_length: int = 4          # middle tokens the diffusion coder drafts per AR verification
    draft_steps: int = 1           # denoising steps per draft at most (the last step commits what is left)

    def __post_init__(self) -> None:
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("cache", self.cache, CACHE_MODES)
        _check_choice("unmask", self.unmask, UNMASK_RULES)
        _check_choice("length", self.length, LENGTH_POLICIES)
        _check_range("max_tokens", self.max_tokens, 1, 4096)
        _check_range("block_size", self.block_size, 1, 4096)
        _check_range("initial_length", self.initial_length, 1, 4096)
        _check_range("threshold", self.threshold, 0.0, 1.0)
        _check_range("factor", self.factor, 0.0, 64.0)
        _check_range("eb_gamma", self.eb_gamma, 0.0, 1000.0)
        _check_range("early_commit", self.early_commit, 0.0, 1.0)
        _check_range("draft_length", self.draft_length, 1, 4096)
        _check_range("draft_steps", self.draft_steps, 1, 4096)
        _check_range("temperature", self.temperature, 0.0, 10.0)
        _check_range("refresh_every", self.refresh_every, 0, 1 << 20)
        _check_range("max_steps", self.max_steps, 0, 1 << 20)
        _check_range("context_tokens", self.context_tokens, 0, 1 << 20)

    @property
    def step_cap(self) -> int:
        return self.max_steps or 4 * self.max_tokens + 8

    def replace(self, **changes: Any) -> "DecodeConfig":
        """A copy with `changes` applied; unknown option names raise ValueError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown decoding option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}]; got {value}")
