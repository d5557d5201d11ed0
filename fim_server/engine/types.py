"""What goes into an engine and what comes out: text in, text plus stats out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class InfillRequest:
    prefix: str
    suffix: str
    id: str = ""
    key: str = ""                # document key: requests with one key may share KV ("" = never)


@dataclass
class Stats:
    engine: str = ""
    cache: str = ""              # cache mode used ("" for the AR engine: it always uses its KV cache)
    nfe: int = 0                 # forward passes of the model for this request
    tokens: int = 0              # middle tokens produced (after cutting at the end token)
    tokens_per_forward: float = 0.0
    prompt_tokens: int = 0       # prefix + suffix tokens actually given to the model
    reused_tokens: int = 0       # leading tokens whose KV came from the document's previous request
    truncated: bool = False      # the document did not fit the context budget
    steps: int = 0               # denoising / decoding steps taken
    encode_ms: float = 0.0       # tokenize + lay out
    decode_ms: float = 0.0       # model forwards and selection
    latency_ms: float = 0.0      # encode + decode + detokenize + post-process
    cancelled: bool = False
    stop_reason: str = ""        # end | line | repeat | length | steps | cancelled | empty
    early_commits: int = 0       # diffusion: steps where early commit settled the whole block at once
    # speculative: nfe = ar_forwards + draft_forwards, steps = verifications
    ar_forwards: int = 0         # AR forwards (the prompt prefill and one per verification)
    draft_forwards: int = 0      # diffusion forwards spent drafting
    acceptance_length: float = 0.0   # mean draft tokens accepted per verification
    drafts_accepted: int = 0     # drafts the AR coder accepted whole

    def finish(self) -> "Stats":
        self.tokens_per_forward = round(self.tokens / self.nfe, 4) if self.nfe else 0.0
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class InfillResult:
    text: str
    stats: Stats
    token_ids: list[int] = field(default_factory=list)   # raw middle ids, before post-processing


# Called between steps with the indices of rows still running; returns the rows to stop.
ShouldStop = Callable[[list[int]], set[int]]
