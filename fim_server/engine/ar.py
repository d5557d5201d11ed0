"""Autoregressive FIM baseline: a PSM prompt, one prefill, then KV-cached decoding.

    prompt            [bos] <fim_prefix> P <fim_suffix> S <fim_middle>, left-padded into a batch
    prefill           one forward over the prompts -> logits of the first middle token
    decode_one_token  one forward of every row's last token over the KV cache
    loop              pick -> stop rules -> decode_one_token, at most max_tokens times

All rows step together; a finished row is fed the pad token and its outputs are ignored.
Position ids are the cumulative sum of the attention mask, so a row's tokens sit at the same
positions whatever the padding: batch size 1 and batch N give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import DynamicCache

from fim_server.models.loader import LoadedModel, takes_logits_to_keep
from fim_server.wire.options import DecodeConfig

from .base import PSM, Engine, RowState, Timing
from .kv import RowKV
from .layout import fit_context
from .prefix_store import PrefixStore, prefill_inputs, remember_prompts
from .types import InfillRequest, InfillResult, ShouldStop, Stats


@dataclass
class _Row(RowState):
    """One request while it decodes."""

    prompt: list[int]                               # PSM prompt ids, special tokens included
    stats: Stats
    key: str = ""                                   # document key for cross-request KV reuse
    past: Optional[RowKV] = None                    # KV of prompt[:reused], from the document's last request
    ids: list[int] = field(default_factory=list)    # middle tokens so far (the end token excluded)
    nfe: int = 0                                    # forwards whose logits this row used
    stop_reason: str = ""                           # "" while running


class AREngine(PSM, Engine):
    kind = "ar"

    def __init__(self, lm: LoadedModel, kv_store: Optional[PrefixStore] = None):
        super().__init__(lm, kv_store)
        self.takes_keep = takes_logits_to_keep(self.model)

    # ---------------------------------------------------------------- set-up and results

    def start(self, req: InfillRequest, config: DecodeConfig) -> _Row:
        ctx = fit_context(self.tok, req.prefix, req.suffix, self.budget(config))
        stats = Stats(engine="ar", cache="", truncated=ctx.truncated,
                      prompt_tokens=len(ctx.prefix_ids) + len(ctx.suffix_ids))
        row = _Row(prompt=self.prompt(ctx.prefix_ids, ctx.suffix_ids), stats=stats,
                   key=req.key if config.kv_reuse else "")
        # exact for a causal model; at least the last prompt token is computed, for its logits
        stats.reused_tokens, row.past = self.kv_store.lookup(row.key, row.prompt, len(row.prompt) - 1)
        return row

    def result(self, row: _Row, req: InfillRequest, config: DecodeConfig, timing: Timing) -> InfillResult:
        text = self.text(row.ids, req, config)
        stats = row.stats
        stats.nfe = stats.steps = row.nfe      # one token per forward
        stats.tokens = len(row.ids)
        return InfillResult(text=text, stats=self.close_stats(stats, text, row.stop_reason, timing),
                            token_ids=list(row.ids))

    # ---------------------------------------------------------------- the loop

    def decode(self, rows: list[_Row], config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        generator = None
        if config.temperature > 0:
            generator = torch.Generator(device=self.lm.device).manual_seed(config.seed)
        self.poll(rows, should_stop)                 # requests may be cancelled before any forward
        if all(r.done for r in rows):
            return
        input_ids, mask, positions, cache = prefill_inputs(                     # [B, T] each
            [r.prompt for r in rows], [r.past for r in rows], self.ids.pad, self.lm.device, self.model.config)
        logits = self.prefill(input_ids, mask, positions, cache)                # [B, V]
        remember_prompts(self.kv_store, rows, cache, mask)
        for step in range(config.max_tokens):
            tokens = self.pick(logits, config, generator)                       # [B]
            for row, token in zip(rows, tokens.tolist()):
                if not row.done:
                    row.nfe += 1
                    self.take(row, token, config)
            self.poll(rows, should_stop)
            if all(r.done for r in rows):
                break
            finished = torch.tensor([r.done for r in rows], device=tokens.device)  # [B]
            tokens = tokens.masked_fill(finished, self.ids.pad)                 # [B]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)        # [B, T + step + 1]
            positions = positions[:, -1:] + 1                                   # [B, 1]
            logits = self.decode_one_token(tokens[:, None], mask, positions, cache)   # [B, V]
        for row in rows:
            if not row.done:      # unreachable: max_tokens steps fill every row; kept as a guard
                row.finish("length")

    def prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache: DynamicCache) -> torch.Tensor:
        """Whole prompts [B, T] -> logits of the first middle token [B, V]; fills the cache."""
        return self._forward(input_ids, mask, positions, cache)

    def decode_one_token(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                         cache: DynamicCache) -> torch.Tensor:
        """Last tokens [B, 1] over the cache (mask [B, past + 1]) -> next-token logits [B, V]."""
        return self._forward(tokens, mask, positions, cache)

    def _forward(self, input_ids, mask, positions, cache) -> torch.Tensor:
        return self.forward(input_ids, mask, positions, cache, last_only=True)[:, -1]   # [B, V]

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache: DynamicCache, last_only: bool = False) -> torch.Tensor:
        """One causal forward of input_ids [B, T] (mask [B, past + T]) over the cache, which it
        extends: logits [B, T, V], or [B, 1, V] for the last position only when `last_only`."""
        extra = {"logits_to_keep": 1} if last_only and self.takes_keep else {}
        logits, _ = self.lm.forward(cache, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                    use_cache=True, **extra)
        return logits[:, -1:] if last_only else logits

    def pick(self, logits: torch.Tensor, config: DecodeConfig,
             generator: Optional[torch.Generator]) -> torch.Tensor:
        """Next token per row [B]: argmax, or a sample at config.temperature; banned ids never."""
        logits = logits.float().masked_fill(self.banned, float("-inf"))        # [B, V]
        if config.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / config.temperature, dim=-1)              # [B, V]
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

