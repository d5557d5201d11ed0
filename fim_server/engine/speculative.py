"""Speculative FIM: the diffusion coder drafts a block of the middle, the AR FIM coder verifies it.

One round, for every running row of the batch:
  1. draft     the diffusion coder fills a canvas of draft_length masks set between
               [prefix + middle so far] and [suffix], in at most draft_steps denoising steps
  2. verify    one AR forward of [pending tokens + draft] over the AR KV cache gives the AR
               distribution at every draft position and one past it
  3. accept    greedy: the longest draft prefix equal to the AR argmax, then the AR's own token
               (the correction, or a bonus token after a whole draft); sampling: the speculative
               sampling rule, so every token follows the AR distribution exactly
  4. roll back the cache keeps the fed tokens the AR accepted and drops the rest

Greedy output is the AR engine's, token for token: every token is the AR argmax given the tokens
before it; the draft only decides how many of them one AR forward confirms.

The AR cache holds the PSM prompt and the middle so far, except the newest token: that one is
"pending" (first the prompt's <fim_middle>, then each correction), fed with the next draft whose
first logits it yields. Rows share one cache, right-aligned (left padding); after a verification
it is cut back to each row's accepted tokens: a crop when all rows keep the same count, a gather
otherwise, so it never holds a rejected token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
from transformers import DynamicCache

from fim_server.wire.options import DecodeConfig

from .ar import AREngine
from .base import Engine, RowState, Timing
from .batching import left_pad, pad_batch
from .canvas import Canvas
from .diffusion import DiffusionEngine
from .kv import RowKV
from .layout import fit_context
from .types import InfillRequest, InfillResult, ShouldStop, Stats
from .unmask import choose, make_rule


@dataclass(eq=False)
class _Row(RowState):
    """One request while it decodes."""

    prompt: list[int]                               # AR PSM prompt ids
    draft_lead: list[int]                           # draft model: [bos] + prefix ids
    draft_suffix: list[int]
    stats: Stats
    ids: list[int] = field(default_factory=list)    # middle so far (the end token excluded)
    pending: list[int] = field(default_factory=list)   # accepted ids not in the AR cache yet
    cached: int = 0                                 # AR cache entries of this row = position of pending[0]
    ar_forwards: int = 0                            # the prompt prefill and each verification
    verifications: int = 0
    accepted: int = 0                               # draft tokens accepted in all
    drafts_accepted: int = 0
    draft_forwards: int = 0
    draft_past: Optional[RowKV] = None              # drafter KV of the lead's first positions, from the last draft
    stop_reason: str = ""



@dataclass
class Draft:
    tokens: list[int]                   # AR token ids (a draft end token becomes the AR end token)
    q: Optional[torch.Tensor] = None    # sampling: [len(tokens), V_ar] the distribution each came from


class ARCache:
    """The verifier's side of a batch: one DynamicCache, rows right-aligned ([B, H, K, D])."""

    def __init__(self, ar: AREngine):
        self.ar = ar
        self.cache = DynamicCache(config=ar.model.config)
        self.rows: list[_Row] = []
        self.fed: list[int] = []        # pending tokens each row fed to the last verification
        self.width = 0                  # cache length before the last verification

    def prefill(self, rows: list[_Row]) -> None:
        """Cache the prompts but their last token, which becomes pending."""
        input_ids, mask, positions = left_pad([r.prompt[:-1] for r in rows], self.ar.ids.pad,
                                              self.ar.lm.device)                       # [B, T] each
        self.ar.forward(input_ids, mask, positions, self.cache, last_only=True)
        self.rows = list(rows)
        for r in rows:
            r.cached, r.pending = len(r.prompt) - 1, [r.prompt[-1]]
            r.ar_forwards += 1

    def length(self) -> int:
        return self.cache.get_seq_length()

    def retain(self, rows: list[_Row]) -> None:
        """Drop the batch rows not in `rows` (finished or cancelled); order is kept."""
        if len(rows) == len(self.rows):
            return
        wanted = {id(r) for r in rows}
        keep = [i for i, r in enumerate(self.rows) if id(r) in wanted]
        self.cache.batch_select_indices(torch.tensor(keep, device=self.ar.lm.device))
        self.rows = [self.rows[i] for i in keep]

    def verify(self, drafts: list[list[int]]) -> list[torch.Tensor]:
        """One forward of each row's pending tokens + draft: per row the logits [n + 1, V] that
        predict the draft's n tokens and the one after."""
        dev = self.ar.lm.device
        seqs = [r.pending + d for r, d in zip(self.rows, drafts)]
        k = self.length()
        input_ids, valid = pad_batch(seqs, self.ar.ids.pad, dev)                          # [B, W] x2
        width = input_ids.shape[1]
        cached = torch.zeros((len(seqs), k), dtype=torch.long, device=dev)               # [B, K]
        for b, r in enumerate(self.rows):
            cached[b, k - r.cached:] = 1                  # the row's entries: right-aligned in the cache
        mask = torch.cat([cached, valid.long()], dim=1)                                    # [B, K + W]
        starts = torch.tensor([r.cached for r in self.rows], device=dev)[:, None]         # [B, 1]
        positions = starts + torch.arange(width, device=dev)                               # [B, W]
        logits = self.ar.forward(input_ids, mask, positions, self.cache)                   # [B, W, V]
        self.fed, self.width = [len(r.pending) for r in self.rows], k
        for r in self.rows:
            r.ar_forwards += 1
        return [logits[b, len(r.pending) - 1:len(s)] for b, (r, s) in enumerate(zip(self.rows, seqs))]

    def keep(self, kept: list[int]) -> None:
        """Row b keeps its fed pending tokens and its first kept[b] draft tokens; the rest goes.
        Finished rows are ignored (the next retain drops them)."""
        live = [b for b, r in enumerate(self.rows) if not r.done]
        new = {b: self.fed[b] + kept[b] for b in live}                  # entries each row gains
        old = {b: self.rows[b].cached for b in live}
        for b in live:
            self.rows[b].cached += new[b]
        if not live:
            return
        grow = set(new.values())
        if len(grow) == 1:                                               # same for all: a crop
            self.cache.crop(self.width + grow.pop() - self.length())    # minus the rejected entries
            return
        self._gather(live, [(self.width - old[b], self.width + new[b]) for b in live])

    def _gather(self, live: list[int], spans: list[tuple[int, int]]) -> None:
        """Keep cache columns spans[i] of batch row live[i], right-aligned in a new cache."""
        dev = self.ar.lm.device
        width = max(e - s for s, e in spans)
        index = torch.tensor([[s] * (width - (e - s)) + list(range(s, e)) for s, e in spans], device=dev)  # [B', K']
        rows = torch.tensor(live, device=dev)
        for layer in self.cache.layers:
            keys, values = layer.keys[rows], layer.values[rows]         # [B', H, K, D]
            idx = index[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            layer.keys, layer.values = keys.gather(2, idx), values.gather(2, idx)
        self.rows = [self.rows[b] for b in live]
        self.fed = [self.fed[b] for b in live]


def accept_greedy(draft: list[int], target: torch.Tensor) -> tuple[int, int]:
    """(accepted draft tokens, the AR token after them); target [n + 1] is the AR argmax."""
    agree = (target[:len(draft)] == torch.tensor(draft, dtype=target.dtype, device=target.device)).tolist()
    k = agree.index(False) if False in agree else len(draft)
    return k, int(target[k])


def accept_sampled(draft: list[int], q: torch.Tensor, p: torch.Tensor,
                   generator: torch.Generator) -> tuple[int, int]:
    """Speculative sampling: draft token x_i (drawn from q[i]) stays with probability
    min(1, p[i, x] / q[i, x]); the first rejected one is redrawn from norm(max(0, p[i] - q[i])),
    and after a whole draft one more token comes from p[n]. q [n, V], p [n + 1, V]."""
    n = len(draft)
    u = torch.rand(n, generator=generator, device=p.device)                  # [n]
    for i, x in enumerate(draft):
        if u[i] * q[i, x] < p[i, x]:
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        if residual.sum() <= 0:          # p == q up to rounding: never rejected in exact arithmetic
            residual = p[i]
        return i, int(torch.multinomial(residual, 1, generator=generator))
    return n, int(torch.multinomial(p[n], 1, generator=generator))


class SpeculativeEngine(Engine):
    kind = "speculative"

    def __init__(self, draft: DiffusionEngine, verifier: AREngine):
        if not isinstance(draft, DiffusionEngine) or not isinstance(verifier, AREngine):
            raise ValueError("the speculative engine needs a diffusion draft engine and an AR verifier engine")
        check_same_tokenizer(draft.tok, verifier.tok, draft.lm.source, verifier.lm.source)
        self.draft, self.verifier = draft, verifier
        self.lm = verifier.lm                # the AR coder decides the output
        self.draft_lm = draft.lm
        self.tok = verifier.tok
        self.vocab = verifier.model.config.vocab_size
        # a draft end token (the diffusion family's end or delete) proposes the AR's end token
        self.draft_ends = [i for i in {*draft.ids.end_of_middle, draft.ids.delete} if i is not None]
        self.ar_end = verifier.ids.end_of_middle[0]

    def forget(self, key: str) -> None:
        self.verifier.forget(key)
        self.draft.forget(key)

    def cached_documents(self) -> int:
        return self.verifier.cached_documents() + self.draft.cached_documents()

    def check(self, config: DecodeConfig) -> None:
        self.verifier.check(config)
        self.draft.check(config)

    # ---------------------------------------------------------------- set-up and results

    def start(self, req: InfillRequest, config: DecodeConfig) -> _Row:
        ar = self.verifier
        ctx = fit_context(self.tok, req.prefix, req.suffix, ar.budget(config))      # as the AR engine does
        d_ids = self.draft.ids
        bos = [d_ids.bos] if d_ids.bos is not None else []
        d_ctx = fit_context(self.draft.tok, req.prefix, req.suffix, self.draft.budget(config))
        stats = Stats(engine="speculative", cache=config.cache, truncated=ctx.truncated,
                      prompt_tokens=len(ctx.prefix_ids) + len(ctx.suffix_ids))
        return _Row(prompt=ar.prompt(ctx.prefix_ids, ctx.suffix_ids), draft_lead=bos + d_ctx.prefix_ids,
                    draft_suffix=d_ctx.suffix_ids, stats=stats)

    def result(self, row: _Row, req: InfillRequest, config: DecodeConfig, timing: Timing) -> InfillResult:
        text = self.text(row.ids, req, config)
        s = row.stats
        s.ar_forwards = row.ar_forwards
        s.draft_forwards = row.draft_forwards
        s.nfe, s.steps, s.tokens = s.ar_forwards + s.draft_forwards, row.verifications, len(row.ids)
        s.acceptance_length = round(row.accepted / row.verifications, 4) if row.verifications else 0.0
        s.drafts_accepted = row.drafts_accepted
        return InfillResult(text=text, stats=self.close_stats(s, text, row.stop_reason, timing),
                            token_ids=list(row.ids))

    # ---------------------------------------------------------------- the loop

    def decode(self, rows: list[_Row], config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        d_gen = torch.Generator(device=self.draft_lm.device).manual_seed(config.seed)
        v_gen = torch.Generator(device=self.lm.device).manual_seed(config.seed + 1)
        self.poll(rows, should_stop)
        running = [r for r in rows if not r.done]
        if not running:
            return
        cache = ARCache(self.verifier)
        cache.prefill(running)
        while running:
            cache.retain(running)
            drafts = self._draft(running, config, d_gen)
            logits = cache.verify([d.tokens for d in drafts])                   # per row [n + 1, V]
            kept = [self._accept(r, d, lg, config, v_gen) for r, d, lg in zip(running, drafts, logits)]
            cache.keep(kept)
            self.poll(rows, should_stop)
            running = [r for r in rows if not r.done]

    def _accept(self, row: _Row, draft: Draft, logits: torch.Tensor, config: DecodeConfig,
                generator: torch.Generator) -> int:
        """Take the verified tokens into the row (stop rules apply); returns draft tokens accepted."""
        logits = logits.float().masked_fill(self.verifier.banned, float("-inf"))      # [n + 1, V]
        if config.temperature > 0:
            p = torch.softmax(logits / config.temperature, dim=-1)
            k, token = accept_sampled(draft.tokens, draft.q, p, generator)
        else:
            k, token = accept_greedy(draft.tokens, logits.argmax(dim=-1))
        row.verifications += 1
        row.accepted += k
        row.drafts_accepted += k == len(draft.tokens)
        for t in draft.tokens[:k] + [token]:
            self.verifier.take(row, t, config)
            if row.done:
                break
        row.pending = [token]
        return k

    # ---------------------------------------------------------------- drafting

    def _canvas(self, row: _Row, config: DecodeConfig) -> Canvas:
        d = self.draft
        n = min(config.draft_length, config.max_tokens - len(row.ids))
        lead = row.draft_lead + row.ids
        if d.shifted and not lead:
            lead = [d.ids.pad]           # shifted logits need a position before the first middle token
        # with a cache, the lead's KV from the last draft is reused (only the tokens accepted since
        # and the canvas and suffix are recomputed): Fast-dLLM's prefix approximation across drafts
        reuse = config.cache != "none"
        return Canvas(lead=lead, canvas=[d.ids.mask] * n, suffix=row.draft_suffix, ids=d.ids,
                      expand_policy=False, max_tokens=n, block_size=n, end_guard=config.end_guard,
                      key="draft" if reuse else "", past=row.draft_past if reuse else None)

    def _draft(self, rows: list[_Row], config: DecodeConfig, generator: torch.Generator) -> list[Draft]:
        """Each row's draft from at most draft_steps diffusion steps over a fresh canvas
        (draft_select picks the positions; sampling keeps the q each token was drawn from)."""
        sampling = config.temperature > 0
        canvases = [self._canvas(r, config) for r in rows]
        q = [[None] * len(c.canvas) for c in canvases]
        rule = make_rule(config)
        for step in range(config.draft_steps):
            active = [b for b, c in enumerate(canvases) if not c.done]
            if not active:
                break
            group = [canvases[b] for b in active]
            select = partial(draft_select, rule, config, config.draft_steps - step)
            commit, probs = self.draft.step(group, config, generator, select)   # [B, L], [B, L, V]
            for i, b in enumerate(active):
                c = canvases[b]
                if sampling:
                    for j in commit[i].nonzero().flatten().tolist():
                        q[b][j] = probs[i, j]
                if c.end_index() is not None or c.first_mask() == len(c.canvas):
                    c.finish("end")
        for r, c in zip(rows, canvases):
            r.draft_forwards += c.nfe
            r.draft_past = c.lead_kv
        return [self._as_draft(c, qb, sampling) for c, qb in zip(canvases, q)]

    def _as_draft(self, c: Canvas, q: list, sampling: bool) -> Draft:
        """The settled canvas as AR ids: cut after its end token, which becomes the AR end token."""
        end = c.end_index()
        n = c.first_mask() if end is None else end + 1
        tokens = [self.ar_end if t in self.draft_ends else t for t in c.canvas[:n]]
        if not sampling:
            return Draft(tokens)
        rows = [self._to_ar(q[j]) for j in range(n)]
        return Draft(tokens, torch.stack(rows) if rows else torch.zeros((0, self.vocab), device=self.lm.device))

    def _to_ar(self, q: torch.Tensor) -> torch.Tensor:
        """A draft distribution [V_draft] over the AR's ids [V_ar]: end mass moves to the AR end."""
        q = q.to(self.lm.device, torch.float32)
        out = torch.zeros(self.vocab, device=q.device)
        width = min(self.vocab, q.shape[0])
        out[:width] = q[:width]
        ends = [i for i in self.draft_ends if i < q.shape[0]]
        out[[i for i in ends if i < self.vocab]] = 0.0
        out[self.ar_end] += q[ends].sum()
        return out


def draft_select(rule, config: DecodeConfig, steps_left: int, conf: torch.Tensor, masked: torch.Tensor,
                 probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafter's pick for one step (unmask.Select): the unmask rule's picks plus the
    most confident positions the step budget needs. Sampling: as many positions, but the leftmost
    ones, ranked by the distributions' top probability (not the sampled tokens'): then each draft
    token is drawn from the q stored for it given every token before it, which the rejection rule
    relies on."""
    sampling = config.temperature > 0
    if sampling:
        conf = probs.max(dim=-1).values
    commit, early = choose(rule, conf, masked, probs, config.early_commit)
    commit |= top_n(conf, masked, steps_left)
    if sampling:
        commit = leftmost(masked, commit.sum(dim=1))
    return commit, early


def top_n(conf: torch.Tensor, masked: torch.Tensor, steps_left: int) -> torch.Tensor:
    """bool [B, L]: the ceil(masked / steps_left) most confident masked positions of each row,
    so a draft is complete after its step budget."""
    want = torch.ceil(masked.sum(dim=1) / steps_left)                         # [B]
    order = conf.masked_fill(~masked, -1.0).argsort(dim=1, descending=True)  # [B, L]
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    return masked & (ranks < want[:, None])


def leftmost(masked: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the first count[b] masked positions of each row."""
    return masked & (masked.long().cumsum(dim=1) <= count[:, None])


def check_same_tokenizer(a, b, name_a: str, name_b: str) -> None:
    """Refuse two models whose tokenizers differ: a draft token must mean the same to the verifier."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va == vb:
        return
    differ = sorted(set(va.items()) ^ set(vb.items()), key=lambda kv: kv[1])[:3]
    raise ValueError(
        f"speculative decoding needs one tokenizer for both models, but {name_a} ({len(va)} tokens) "
        f"and {name_b} ({len(vb)} tokens) differ, e.g. {', '.join(f'{t!r}={i}' for t, i in differ)}")
