"""Block-diffusion FIM engine (the Fast-dLLM v2 / SDAR design): a PSM prompt, then the middle
block by block, causal across blocks and bidirectional inside one, over an exact KV cache.

    prefill   [bos] <fim_prefix> P <fim_suffix> S <fim_middle>, left-padded: one causal forward over
              the KV reused from the document's previous request (exact: the prompt is causal)
    step      the active block (block_size slots, masks at first) over the cache: propose, select
              (the unmask rule, >= 1 a row), commit; the block's own KV is dropped again
    advance   a finished block rides at the front of the next block's first step: its KV, computed
              from its final tokens (bidirectional inside it, causal to all before), is kept. So
              the cache is written once per block, exact, and never refreshed
    stop      the end-of-middle token, a loop (the repetition guard), the line (single-line mode),
              max_tokens or the step cap

Shifted logits (a model initialised from an AR coder): block slot j is predicted at j - 1, so
slot 0 comes from the last position before the block (the prompt's last token, or the previous
block's last slot); that position is final, and its logits are kept for the block's later steps.
Unshifted: slot j is predicted at j. Rows move from block to block together, so their caches
stay one right-aligned tensor; a row that settled its block waits for the others.

Aligned blocks (the published coders, Family.aligned_blocks): blocks sit at multiples of
block_size counted from each row's first prompt token, as they were trained. The prefill then
covers the prompt's whole blocks only, block-causal; the prompt's last partial block (its tail)
opens the first block, fixed, with the first middle slots after it. Sub-blocks
(DecodeConfig.sub_block_size, Fast-dLLM v2) fill a block's slots left to right, a sub-block at a
time, while every forward still covers the whole block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from fim_server.models.loader import LoadedModel, takes_logits_to_keep
from fim_server.wire.options import DecodeConfig, OptionError

from .base import PSM, Engine, RowState, Timing
from .batching import pad_batch
from .layout import fit_context
from .lossless import decode_lossless
from .ngrams import table_for
from .kv import RowKV, new_cache
from .prefix_store import PrefixStore, prefill_inputs, remember_prompts
from .types import InfillRequest, InfillResult, ShouldStop, Stats
from .unmask import propose_tokens, selector


@dataclass(eq=False)
class _Row(RowState):
    """One request while it decodes."""

    prompt: list[int]                               # PSM prompt ids
    stats: Stats
    ids: list[int] = field(default_factory=list)    # the middle: tokens of settled blocks (end excluded)
    nfe: int = 0                                    # forwards: the prefill and the steps with masks to fill
    stop_reason: str = ""
    span: tuple[int, int] = (0, 0)                  # the active block's slots this row fills (after its tail)
    key: str = ""                                   # document key for cross-request KV reuse
    past: Optional[RowKV] = None                    # KV of prompt[:reused], from the document's last request



class BlockCache:
    """The batch's KV cache and what goes with it: rows right-aligned, [B, H, K, D] per layer."""

    def __init__(self, engine: "BlockEngine", rows: list[_Row], block_size: int = 0):
        """Prefill each row's prompt: causal, over the KV a row reuses from its document's last
        request; or, when blocks are aligned, block-causal and less its tail (see `tails`;
        block_size matters only then)."""
        self.engine = engine
        self.lm = engine.lm
        self.first: Optional[torch.Tensor] = None                  # [B, V] predicts block slot 0 (shifted)
        self.pending: Optional[torch.Tensor] = None                # [B, Lp] a settled block not cached yet
        if engine.aligned:
            self._prefill_aligned(rows, block_size)
        else:
            self._prefill_causal(rows)

    def _prefill_causal(self, rows: list[_Row]) -> None:
        ids, mask, positions, self.cache = prefill_inputs([r.prompt for r in rows], [r.past for r in rows],
                                                          self.engine.ids.pad, self.lm.device, self.lm.model.config)
        logits, _ = self.lm.forward(self.cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=True, **self.engine.keep_last)
        self.valid = mask.bool()                                   # [B, K] real (not padding) slots
        self.next_pos = positions[:, -1] + 1                       # [B] position of the first uncached token
        self.first = logits[:, -1]
        remember_prompts(self.engine.kv_store, rows, self.cache, mask)
        for row in rows:
            row.nfe += 1                                           # the prefill is a forward, as the AR engine counts it

    def _prefill_aligned(self, rows: list[_Row], block_size: int) -> None:
        self.cache = new_cache(self.lm.model.config)
        engine = self.engine
        cut = [len(r.prompt) - len(t) for r, t in zip(rows, engine.tails(rows, block_size))]
        ids, valid = pad_batch([r.prompt[:n] for r, n in zip(rows, cut)], engine.ids.pad, self.lm.device, left=True)
        self.valid = valid                                         # [B, K] real (not padding) slots
        self.next_pos = valid.sum(dim=1)                           # [B] position of the first uncached token
        if ids.shape[1]:                                           # every prompt may be all tail
            positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)                        # [B, T]
            logits, _ = self.lm.forward(self.cache, input_ids=ids, attention_mask=self._prefill_mask(positions, block_size),
                                        position_ids=positions, use_cache=True, **engine.keep_last)
            self.first = logits[:, -1]
            for row in rows:
                row.nfe += 1

    def _prefill_mask(self, positions: torch.Tensor, block_size: int) -> torch.Tensor:
        """[B, 1, T, T] bool, block-causal on each row's own positions: a prompt token sees its own
        block and every earlier one. Padding sees itself only (a query that sees nothing is NaN)."""
        blocks = positions // block_size                                                   # [B, T]
        mask = (blocks[:, None, :] <= blocks[:, :, None]) & self.valid[:, None, :]        # [B, T, T]
        eye = torch.eye(positions.shape[1], dtype=torch.bool, device=positions.device)
        return (mask | eye)[:, None]

    def step(self, block: torch.Tensor) -> torch.Tensor:
        """Logits for each slot of the active block [B, L] -> [B, L, V]; a pending block's KV is
        written into the cache on the way."""
        pending = self.pending if self.pending is not None else block[:, :0]
        lp, width = pending.shape[1], block.shape[1]
        queries = torch.cat([pending, block], dim=1)                                    # [B, Q]
        q = queries.shape[1]
        positions = self.next_pos[:, None] + torch.arange(q, device=block.device)       # [B, Q]
        logits, _ = self.lm.forward(self.cache, input_ids=queries, attention_mask=self._mask(lp, q),
                                    position_ids=positions, use_cache=True)            # [B, Q, V]
        self.cache.crop(-width)                      # the active block's KV goes: its masks change
        if lp:                                       # the pending block's KV stays: it is final
            self.valid = torch.cat([self.valid, self.valid.new_ones(len(block), lp)], dim=1)
            self.next_pos = self.next_pos + lp
            self.first = logits[:, lp - 1]
            self.pending = None
        if not self.engine.shifted:
            return logits[:, lp:]
        # no prefill (aligned, every prompt all tail): slot 0 is a prompt token, its logits unused
        first = self.first if self.first is not None else logits[:, lp]
        return torch.cat([first[:, None], logits[:, lp:lp + width - 1]], dim=1)

    def _mask(self, lp: int, q: int) -> torch.Tensor:
        """[B, 1, Q, K + Q] bool: every query sees the cached slots; the pending block sees itself
        (bidirectional) but not the active block; the active block sees both."""
        rows = self.valid.shape[0]
        inner = torch.ones((q, q), dtype=torch.bool, device=self.valid.device)         # [Q, Q]
        inner[:lp, lp:] = False
        cached = self.valid[:, None, :].expand(-1, q, -1)                               # [B, Q, K]
        return torch.cat([cached, inner.expand(rows, -1, -1)], dim=2)[:, None]

    def settle(self, block: torch.Tensor) -> None:
        """The active block is settled: it is fed (and cached) with the next block's first step."""
        self.pending = block

    def retain(self, keep: list[int]) -> None:
        """Keep only the batch rows `keep` (the others finished)."""
        index = torch.tensor(keep, device=self.valid.device)
        self.cache.batch_select_indices(index)
        self.valid, self.next_pos = self.valid[index], self.next_pos[index]
        if self.first is not None:
            self.first = self.first[index]
        if self.pending is not None:
            self.pending = self.pending[index]


class BlockEngine(PSM, Engine):
    kind = "block"

    def __init__(self, lm: LoadedModel, kv_store: Optional[PrefixStore] = None):
        super().__init__(lm, kv_store)                   # kv_store: prompt KV kept per document (causal prompts)
        self.shifted = lm.family.shifted
        self.aligned = lm.family.aligned_blocks
        self.end_ids = torch.tensor(self.ids.end_of_middle, device=lm.device)      # [E]
        self.keep_last = {"logits_to_keep": 1} if takes_logits_to_keep(self.model) else {}
        self.ngrams = table_for(lm.source, self.tok)       # lossless drafts; None when the checkpoint has none

    def budget(self, config: DecodeConfig) -> int:
        """Aligned blocks: the last block may run up to block_size - 1 masks past max_tokens."""
        return super().budget(config) - (config.block_size - 1 if self.aligned else 0)

    def check(self, config: DecodeConfig) -> None:
        super().check(config)
        if config.lossless and not self.shifted:
            raise OptionError("lossless", f"{self.lm.family.name} predicts each token at its own position "
                                          "(unshifted logits): the lossless mode needs next-token logits")
        if config.lossless and config.temperature > 0:
            raise OptionError("lossless", "the lossless mode decodes greedily: use temperature 0")

    def tails(self, rows: list[_Row], block_size: int) -> list[list[int]]:
        """Each row's prompt tokens that open its first block: with aligned blocks the prompt's
        last partial block, else none."""
        return [r.prompt[len(r.prompt) - len(r.prompt) % block_size:] if self.aligned else [] for r in rows]

    # ---------------------------------------------------------------- the three hooks

    def start(self, req: InfillRequest, config: DecodeConfig) -> _Row:
        ctx = fit_context(self.tok, req.prefix, req.suffix, self.budget(config))
        stats = Stats(engine="block", cache="exact", truncated=ctx.truncated,
                      prompt_tokens=len(ctx.prefix_ids) + len(ctx.suffix_ids))
        row = _Row(prompt=self.prompt(ctx.prefix_ids, ctx.suffix_ids), stats=stats)
        if config.kv_reuse and not self.aligned:
            # the causal prompt's KV is exact to reuse; at least its last token is computed, for its logits
            row.key = req.key
            stats.reused_tokens, row.past = self.kv_store.lookup(row.key, row.prompt, len(row.prompt) - 1)
        return row

    def decode(self, rows: list[_Row], config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        self.poll(rows, should_stop)
        live = [r for r in rows if not r.done]
        if not live:
            return
        if config.lossless:
            self.check(config)
            decode_lossless(self, live, config, lambda: self.poll(rows, should_stop))
            return
        select = selector(config)
        generator = torch.Generator(device=self.lm.device).manual_seed(config.seed)
        cache = BlockCache(self, live, config.block_size)
        tails = self.tails(live, config.block_size)
        steps = 0
        while live:
            block, fill = self._new_block(live, tails, config)                                 # [B, L] each
            tails = [[] for _ in live]
            while steps < config.step_cap:
                masked = (block == self.ids.mask) & fill & self._running(live, block.device)[:, None]   # [B, L]
                if not masked.any():
                    break
                if config.sub_block_size:
                    masked &= self._sub_block(masked, config.sub_block_size)
                logits = cache.step(block)                                                      # [B, L, V]
                tokens, conf, probs = self._propose(logits, masked, config, generator)
                commit, _ = select(conf, masked, probs)                                         # [B, L]
                block = torch.where(commit, tokens, block)
                steps += 1
                self._after_step(live, block, masked, config)
                self.poll(rows, should_stop)          # indices into the whole batch, as the worker knows it
            for row, slots in zip(live, block.tolist()):
                self._settle(row, slots, config, steps)
            keep = [i for i, r in enumerate(live) if not r.done]
            if len(keep) < len(live) and keep:
                cache.retain(keep)
                block = block[keep]
            live = [live[i] for i in keep]
            cache.settle(block)

    def result(self, row: _Row, req: InfillRequest, config: DecodeConfig, timing: Timing) -> InfillResult:
        text = self.text(row.ids, req, config)
        stats = row.stats
        stats.nfe = stats.steps = row.nfe
        stats.tokens = len(row.ids)
        return InfillResult(text=text, stats=self.close_stats(stats, text, row.stop_reason, timing),
                            token_ids=list(row.ids))

    # ---------------------------------------------------------------- one step

    def _new_block(self, rows: list[_Row], tails: list[list[int]],
                   config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The next block [B, L]: a row's prompt tail (if any), then masks; and the slots each row
        fills [B, L] bool (row.span: after its tail, no more than max_tokens allows). Unaligned
        blocks stop at max_tokens; an aligned one keeps its width, its last masks left unfilled."""
        left = [config.max_tokens - len(r.ids) for r in rows]
        width = config.block_size if self.aligned else min(config.block_size, left[0])
        block = torch.full((len(rows), width), self.ids.mask, dtype=torch.long)
        fill = torch.zeros((len(rows), width), dtype=torch.bool)
        for b, (row, tail, n) in enumerate(zip(rows, tails, left)):
            row.span = (len(tail), min(width, len(tail) + n))
            block[b, :len(tail)] = torch.tensor(tail, dtype=torch.long)
            fill[b, row.span[0]:row.span[1]] = True
        return block.to(self.lm.device), fill.to(self.lm.device)

    @staticmethod
    def _sub_block(masked: torch.Tensor, size: int) -> torch.Tensor:
        """bool [B, L]: the slots of each row's first sub-block (size slots, counted from the
        block's start) that still holds a mask: the sub-blocks fill left to right."""
        slot = torch.arange(masked.shape[1], device=masked.device)                           # [L]
        first = torch.where(masked, slot, masked.shape[1]).amin(dim=1, keepdim=True)        # [B, 1]
        return slot // size == first // size

    @staticmethod
    def _running(rows: list[_Row], device: torch.device) -> torch.Tensor:
        return torch.tensor([not r.done for r in rows], dtype=torch.bool, device=device)       # [B]

    def _propose(self, logits: torch.Tensor, masked: torch.Tensor, config: DecodeConfig,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token, confidence ([B, L] each) and distribution ([B, L, V]) per slot. With the end
        guard an end token may only go to a row's first masked slot: a settled end closes the
        middle, and one further right would be cut off by a later commit before it."""
        logits = logits.float().masked_fill(self.banned, float("-inf"))                          # [B, L, V]
        if config.end_guard:
            first = masked & (masked.long().cumsum(dim=1) == 1)                                   # [B, L]
            ends = logits[..., self.end_ids]
            logits[..., self.end_ids] = ends.masked_fill(~first[..., None], float("-inf"))
        return propose_tokens(logits, config.temperature, generator)

    def _after_step(self, rows: list[_Row], block: torch.Tensor, masked: torch.Tensor,
                    config: DecodeConfig) -> None:
        """Count the forward for the rows that had masks; finish rows whose middle ended or
        whose line is complete (the block's settled slots join the middle)."""
        for row, slots, had in zip(rows, block.tolist(), masked.any(dim=1).tolist()):
            if not had or row.done:
                continue
            row.nfe += 1
            settled = self._settled(row, slots)
            end = self._end_at(settled)
            if end is not None:
                row.ids += settled[:end]
                if not self.cut_loop(row, config, new=end):
                    row.finish("end")
            elif config.single_line and self.line_complete(row.ids + settled):
                row.ids += settled
                if not self.cut_loop(row, config, new=len(settled)):
                    row.finish("line")

    def _settle(self, row: _Row, slots: list[int], config: DecodeConfig, steps: int) -> None:
        """The block is over for this row (all committed, or the step cap): its tokens join."""
        if row.done:
            return
        settled = self._settled(row, slots)
        row.ids += settled
        if self.cut_loop(row, config, new=len(settled)):
            return
        if len(settled) < row.span[1] - row.span[0]:
            row.finish("steps")                       # the step cap left masks in the block
        elif len(row.ids) >= config.max_tokens:
            row.finish("length")
        elif steps >= config.step_cap:
            row.finish("steps")

    def _settled(self, row: _Row, slots: list[int]) -> list[int]:
        """The row's committed slots of the block (its span) up to the first mask."""
        part = slots[row.span[0]:row.span[1]]
        return part[:part.index(self.ids.mask)] if self.ids.mask in part else part

    def _end_at(self, settled: list[int]) -> Optional[int]:
        ends = set(self.ids.end_of_middle)
        return next((j for j, t in enumerate(settled) if t in ends), None)
