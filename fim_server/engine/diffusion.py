"""Diffusion FIM engine: lay out [prefix][masked middle][suffix] and decode the middle with
confidence-based parallel unmasking, block by block, reusing prefix/suffix KV.

One step, for every running row of the batch:
  1. predict   logits for the row's active block: a full forward (cache "none", block start,
               refresh) or a forward of only the active positions over the row's cached KV
  2. propose   a token and its confidence at each block position (greedy or sampled)
  3. select    the unmask rule picks positions to commit (>= 1 per row)
  4. commit    write them; expand/delete edits change the canvas; check the stop rules
"""

from __future__ import annotations

from typing import Optional

import torch

from fim_server.models.loader import LoadedModel, takes_logits_to_keep
from fim_server.wire.options import DecodeConfig

from .base import Engine, Timing
from .batching import pad_batch
from .canvas import Canvas
from .kv import RowKV, assemble, new_cache, rope_inv_freq, shift_keys
from .layout import fit_context
from .prefix_store import PrefixStore
from .repetition import loop_cut
from .types import InfillRequest, InfillResult, ShouldStop, Stats
from .unmask import Select, propose_tokens, selector

class DiffusionEngine(Engine):
    kind = "diffusion"
    warmup_tokens = 8

    def __init__(self, lm: LoadedModel, kv_store: Optional[PrefixStore] = None):
        super().__init__(lm, kv_store)
        self.shifted = lm.family.shifted
        # tokens the end guard holds back: the family's end tokens and, DreamOn-style, delete
        self.end_ids = sorted(i for i in {*self.ids.end_of_middle, self.ids.delete} if i is not None)
        # project only the active window onto the vocabulary (a full forward has ~7x more positions)
        self.takes_keep = takes_logits_to_keep(self.model)
        self.rope_inv_freq = rope_inv_freq(self.model)      # None: kv_shift falls back to refreshes

    # ---------------------------------------------------------------- set-up and results

    def expand_policy(self, config: DecodeConfig) -> bool:
        has_tokens = self.ids.expand is not None and self.ids.delete is not None
        if config.length == "expand" and not has_tokens:
            raise ValueError(f"{self.lm.family.name} has no expand/delete tokens; use length=fixed")
        return config.length == "expand" or (config.length == "auto" and has_tokens)

    def budget(self, config: DecodeConfig) -> int:
        """Tokens left for prefix + suffix once the middle, a BOS and a spare position have room."""
        bos = 1 if self.ids.bos is not None else 0
        return self.context_limit(config) - config.max_tokens - bos - 1

    def start(self, req: InfillRequest, config: DecodeConfig) -> Canvas:
        expand = self.expand_policy(config)
        bos = [self.ids.bos] if self.ids.bos is not None else []
        ctx = fit_context(self.tok, req.prefix, req.suffix, self.budget(config))
        lead = bos + ctx.prefix_ids
        if self.shifted and not lead:
            lead = [self.ids.pad]        # shifted logits need a position before the first middle token
        size = min(config.initial_length, config.max_tokens) if expand else config.max_tokens
        row = Canvas(lead=lead, canvas=[self.ids.mask] * size, suffix=ctx.suffix_ids, ids=self.ids,
                     expand_policy=expand, max_tokens=config.max_tokens, block_size=config.block_size,
                     end_guard=config.end_guard,
                     stats=Stats(engine="diffusion", cache=config.cache, truncated=ctx.truncated,
                                 prompt_tokens=len(ctx.prefix_ids) + len(ctx.suffix_ids)))
        if config.kv_reuse and config.cache != "none":
            row.key = req.key
            # the first block's window starts at the last lead position (shifted) or after the lead
            limit = len(lead) - (1 if self.shifted else 0)
            row.stats.reused_tokens, row.past = self.kv_store.lookup(row.key, lead, limit)
        return row

    def result(self, row: Canvas, req: InfillRequest, config: DecodeConfig, timing: Timing) -> InfillResult:
        ids = row.middle_ids()
        cut = loop_cut(ids, self.blank_ids) if config.repetition_guard else None
        if cut is not None:                          # the repetition guard: keep the loop's first copy
            ids = ids[:cut]
            row.stop_reason = row.stop_reason if row.stop_reason == "cancelled" else "repeat"
        text = self.text(ids, req, config)
        stats = row.stats
        stats.nfe, stats.steps, stats.tokens = row.nfe, row.steps, len(ids)
        stats.early_commits = row.early_commits
        self.close_stats(stats, text, row.stop_reason, timing)
        if row.key and row.lead_kv is not None and not stats.cancelled:
            self.kv_store.store(row.key, row.lead[:row.lead_kv.length], row.lead_kv.clone())
        return InfillResult(text=text, stats=stats, token_ids=ids)

    # ---------------------------------------------------------------- the loop

    def decode(self, rows: list[Canvas], config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        select = selector(config)
        generator = torch.Generator(device=self.lm.device).manual_seed(config.seed)
        for _ in range(config.step_cap):
            self.poll(rows, should_stop)
            active = [r for r in rows if not r.done]
            if not active:
                return
            self.step(active, config, generator, select)
            for row in active:
                self._check_stop(row, config)
        for row in rows:
            if not row.done:
                row.finish("steps")

    def step(self, rows: list[Canvas], config: DecodeConfig, generator: torch.Generator,
             select: Select) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoising step of every row: propose, select (>= 1 position per row), commit.
        Returns what was committed ([B, L] bool) and the distributions proposed ([B, L, V]);
        the stop rules are the caller's (the engine's loop, or the speculative drafter)."""
        tokens, conf, probs, masked = self.propose(rows, config, generator)    # [B, L] x2, [B, L, V], [B, L]
        commit, early = select(conf, masked, probs)                             # [B, L], [B]
        for b, row in enumerate(rows):
            row.nfe += 1
            row.early_commits += int(early[b])
            pos = commit[b].nonzero().flatten().tolist()
            row.commit(pos, tokens[b, pos].tolist(), config.cache)
        return commit, probs

    def propose(self, rows: list[Canvas], config: DecodeConfig, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward over the rows' active blocks: the proposed token and its confidence per block
        position ([B, L] each), the distribution they come from ([B, L, V]) and which positions are
        still masked ([B, L]). The unmask rule then picks what to commit (here, or in a draft)."""
        logits, in_block = self._predict(rows, config)                      # [B, L, V], [B, L]
        tokens, conf, probs = self._propose(logits, rows, config, generator)
        return tokens, conf, probs, self._masked(rows, in_block)

    def _check_stop(self, row: Canvas, config: DecodeConfig) -> None:
        if row.end_index() is not None:
            return row.finish("end")
        if row.first_mask() == len(row.canvas):
            return row.finish("end" if len(row.canvas) < config.max_tokens else "length")
        if config.single_line and self.line_complete(row.settled_ids()):
            return row.finish("line")
        if self._looping(row, config):
            return row.finish("repeat")
        row.advance_block()

    def _looping(self, row: Canvas, config: DecodeConfig) -> bool:
        """The repetition guard on the settled tokens that are new since the last look (the
        result cuts the loop; it checks the whole middle once more, for edits behind them)."""
        if not config.repetition_guard:
            return False
        settled = row.settled_ids()
        new, row.loop_checked = len(settled) - row.loop_checked, len(settled)
        return new > 0 and loop_cut(settled, self.blank_ids, new) is not None

    def _masked(self, rows: list[Canvas], in_block: torch.Tensor) -> torch.Tensor:
        return _flags([row.block_masked() for row in rows], in_block.shape[1], in_block.device) & in_block

    def _propose(self, logits: torch.Tensor, rows: list[Canvas], config: DecodeConfig,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token and confidence per block position, [B, L] each, and the distribution they come
        from, [B, L, V] (the entropy rule and early commit read it)."""
        logits = logits.float().masked_fill(self.banned, float("-inf"))         # [B, L, V]
        if self.ids.expand is not None:
            no_expand = torch.tensor([not r.may_expand() for r in rows], device=logits.device)
            logits[no_expand, :, self.ids.expand] = float("-inf")
        ends = self.end_ids
        if ends and config.end_guard:
            allowed = _flags([row.end_allowed() for row in rows], logits.shape[1], logits.device)   # [B, L]
            logits[..., ends] = logits[..., ends].masked_fill(~allowed[..., None], float("-inf"))
        return propose_tokens(logits, config.temperature, generator)

    # ---------------------------------------------------------------- forwards

    def _predict(self, rows: list[Canvas], config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for each row's active block, right-padded: [B, Lmax, V] and validity [B, Lmax]."""
        shift = config.kv_shift and self.rope_inv_freq is not None
        full = [r for r in rows if config.cache == "none" or r.needs_refresh(config.refresh_every, shift)]
        cached = [r for r in rows if r not in full]
        per_row: dict[int, torch.Tensor] = {}
        if full:
            per_row.update(self._full_forward(full, capture=config.cache != "none", mode=config.cache))
        if cached:
            per_row.update(self._cached_forward(cached, config.cache))
        blocks = [per_row[id(r)] for r in rows]                                    # [L_b, V] each
        logits = torch.nn.utils.rnn.pad_sequence(blocks, batch_first=True)         # [B, Lmax, V], zero-padded
        return logits, _flags([[True] * len(b) for b in blocks], logits.shape[1], logits.device)

    def _forward(self, ids: list[list[int]], positions: list[list[int]], windows: list[tuple[int, int]],
                 cache=None, key_valid=None):
        """One forward of right-padded rows with bidirectional attention over cache + queries.
        windows: per row, the query indices [start, end) whose logits are needed; the returned
        logits are [B, W, V] with row b's window at [0, end - start) (the rest is padding)."""
        dev = self.lm.device
        input_ids, q_valid = pad_batch(ids, self.ids.pad, dev)                                  # [B, Q] x2
        pos, _ = pad_batch(positions, 0, dev)                                                   # [B, Q]
        width = input_ids.shape[1]
        keys = q_valid if key_valid is None else torch.cat([key_valid, q_valid], dim=1)          # [B, K+Q]
        mask = keys[:, None, None, :].expand(-1, 1, width, -1)                                  # [B, 1, Q, K+Q]
        span = max(e - s for s, e in windows)
        keep = torch.tensor([[min(s + i, e - 1) for i in range(span)] for s, e in windows], device=dev)   # [B, W]
        extra = {"logits_to_keep": keep} if self.takes_keep else {}
        logits, past = self.lm.forward(cache, input_ids=input_ids, attention_mask=mask, position_ids=pos,
                                       use_cache=cache is not None, **extra)
        if not self.takes_keep:
            logits = torch.take_along_dim(logits, keep[..., None], dim=1)
        return logits, past

    def _full_forward(self, rows: list[Canvas], capture: bool, mode: str) -> dict[int, torch.Tensor]:
        """Every position of each row, except the leading ones whose KV was reused from the
        document's previous request (row.past: lead[:n]); those sit in the cache's first slots."""
        layouts = [r.layout() for r in rows]
        skip = [r.past.length if r.past is not None else 0 for r in rows]
        cache, key_valid, width = new_cache(self.model.config) if capture else None, None, 0
        if any(skip):
            base = next(r.past for r in rows if r.past is not None)
            cache, key_valid = assemble([r.past or RowKV.empty_like(base) for r in rows], self.model.config)
            width = key_valid.shape[1]                                              # slots before the queries
        windows = [row.window(self.shifted) for row in rows]
        logits, past = self._forward([x[n:] for x, n in zip(layouts, skip)],
                                     [list(range(n, len(x))) for x, n in zip(layouts, skip)],
                                     [(ws - n, we - n) for (ws, we), n in zip(windows, skip)],
                                     cache=cache, key_valid=key_valid)
        result = {}
        for b, (row, n) in enumerate(zip(rows, skip)):
            ws, we = windows[b]
            result[id(row)] = logits[b, :we - ws]                                   # [L, V]
            if capture:
                kept = row.kept_positions(mode, self.shifted)
                slots = torch.tensor([p if p < n else width + p - n for p in kept], dtype=torch.long,
                                     device=self.lm.device)
                row.kv = RowKV.capture(past, b, slots)
                if row.key:
                    row.lead_kv = row.kv.head(min(row.query_range(mode, self.shifted)[0], len(row.lead)))
                row.stale = row.moved = False
                row.shift = 0
        return result

    def _cached_forward(self, rows: list[Canvas], mode: str) -> dict[int, torch.Tensor]:
        for row in rows:                        # only kv_shift rows get here with moved positions
            if row.shift:
                ws, _ = row.window(self.shifted)        # cached slots [ws:] lie behind the block
                row.kv = shift_keys(row.kv, ws, row.shift, self.rope_inv_freq)
            row.moved, row.shift = False, 0
        cache, key_valid = assemble([r.kv for r in rows], self.model.config)
        ids, positions, windows = [], [], []
        for row in rows:
            qs, qe = row.query_range(mode, self.shifted)
            ws, we = row.window(self.shifted)
            ids.append(row.layout()[qs:qe])
            positions.append(list(range(qs, qe)))
            windows.append((0, we - ws))                         # the window leads the query range
        logits, _ = self._forward(ids, positions, windows, cache=cache, key_valid=key_valid)
        result = {}
        for b, row in enumerate(rows):
            result[id(row)] = logits[b, :windows[b][1]]
        return result


def _flags(rows: list[list[bool]], width: int, device: torch.device) -> torch.Tensor:
    """Per-row flags over the active block -> bool [B, width], False past each row's block.
    One tensor from one nested list: it is built at every step."""
    return torch.tensor([flags + [False] * (width - len(flags)) for flags in rows], dtype=torch.bool, device=device)
