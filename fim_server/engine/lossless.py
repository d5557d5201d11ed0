"""Lossless block decoding: a block drafted in parallel, verified by the same network's own
next-token predictions (SDLM's self-speculative mode; blockwise parallel decoding, Stern et al.
2018). The output is token for token the network's greedy left-to-right (causal) decoding of
the PSM prompt; the block only saves forwards when its drafts agree with that decoding.

One forward per round, over the cache (the prompt and every accepted token, causal, so exact):

    queries   fresh   the token the last round accepted last, not cached yet       causal
              draft   the last round's parallel guesses, to verify                   causal
              masks   block_size slots: the next draft                               see all, and each other

Shifted logits (the AR-initialised block coders): the logits at a position are the causal
prediction of the token after it, so the draft's slot j is accepted when it equals the
prediction made at the position before it. The longest agreeing prefix is kept, plus the
prediction at the first disagreement (a correction, always right) or, when the whole draft
agrees, the prediction after it (a bonus token). That token is cached by the next round. When the
whole draft agrees, the masks were conditioned on the right tokens and their guesses become the
next draft (slot 0 stands for the bonus token, slot j guesses the token after it); otherwise
they are dropped. The KV of the kept tokens stays
in the cache; the rest is cropped. The prompt's KV is kept per document, as the AR and block
engines keep theirs, so a follow-up request computes only the prompt tokens after the shared lead.

Every round, prompt lookup drafts too (config.lookup tokens at most; Saxena's prompt lookup
decoding), and its draft is the one verified when it finds one: the tokens
that followed the latest earlier occurrence of the last one to three tokens, searched in the
document (suffix, then prefix, then the middle so far, so that the search ends at the cursor).
Code repeats its names and lines, so such drafts are often right; a wrong one costs only its
query slots, as verification keeps the output the greedy one either way. With the bundled block
coder, preferring the lookup draft over the masks' own (and accepting the token after a whole
draft in the same round) took 2-8% fewer forwards than using it only in rounds without a draft
(a side-by-side on 60 held-out and 180 HumanEval middles).

Unshifted models (logit i predicts token i) make no causal next-token prediction, so they
have no lossless mode here. Rows are decoded one at a time: their acceptance lengths differ,
so their caches would not stay aligned.
"""

from __future__ import annotations

from typing import Callable

import torch

from fim_server.wire.options import DecodeConfig

from .prefix_store import prefill_inputs, remember_prompts



def decode_lossless(engine, rows: list, config: DecodeConfig, poll: Callable[[], None]) -> None:
    """Fill each row's `ids` (and nfe, stop_reason) with the network's greedy causal middle;
    `poll` (the engine's cancellation check over the whole batch) runs between rounds."""
    for row in rows:
        poll()                                  # a cancelled row is finished here
        if not row.done:
            _Round(engine, row, config).run(poll)


def text_order(prompt: list[int], ids) -> list[int]:
    """A PSM prompt `... <pre> P <suf> S <mid>` (ids: the family's TokenIds) as S + P, so that
    the end of the result is the text just before the cursor; the prompt as it is when it
    lacks one of the three FIM tokens."""
    marks = (ids.fim_prefix, ids.fim_suffix, ids.fim_middle)
    if any(m is None or m not in prompt for m in marks):
        return list(prompt)
    pre, suf, mid = (prompt.index(m) for m in marks)
    return list(prompt[suf + 1:mid]) + list(prompt[pre + 1:suf])


def lookup_draft(tokens: list[int], length: int, longest: int = 3, shortest: int = 1) -> list[int]:
    """Prompt lookup (as transformers' prompt_lookup_num_tokens): the `length` tokens that
    followed the latest earlier occurrence of the last n tokens, n from `longest` down to
    `shortest`; [] when none recurs or length <= 0."""
    if length <= 0:
        return []
    for n in range(longest, shortest - 1, -1):
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + length]
    return []


class _Round:
    """One row's decoding state: the cache, the logits at its last cached position, the
    tokens accepted but not cached (fresh) and the draft to verify."""

    def __init__(self, engine, row, config: DecodeConfig):
        self.engine, self.row, self.config = engine, row, config
        self.lm = engine.lm
        self.device = engine.lm.device
        self.mask_id = engine.ids.mask
        self.fresh: list[int] = []
        self.pos = 0                                     # position of the first uncached token
        self.last = self._prefill(row)                   # [V] causal prediction after the cache
        self.text_order = text_order(list(row.prompt), engine.ids)
        self.draft: list[int] = self._lookup()          # the next round's draft to verify

    def run(self, poll) -> None:
        """Rounds until the row finishes; `poll` (between rounds) finishes it when cancelled."""
        steps = 0
        while not self.row.done:
            if steps >= self.config.step_cap:
                self.row.finish("steps")
                return
            self._round()
            steps += 1
            poll()

    # ---------------------------------------------------------------- one round

    def _round(self) -> None:
        n_fresh, draft = len(self.fresh), self.draft
        width = min(self.config.block_size, max(1, self.config.max_tokens - len(self.row.ids) - len(draft)))
        queries = self.fresh + draft + [self.mask_id] * width
        logits = self._forward(queries, verified=n_fresh + len(draft))          # [Q, V]
        self.row.nfe += 1
        # greedy[k]: the causal next token after the first k queries (k = 0: after the cache)
        greedy = torch.cat([self.last[None], logits[:n_fresh + len(draft)]]).argmax(dim=-1).tolist()
        agree = 0
        while agree < len(draft) and draft[agree] == greedy[n_fresh + agree]:
            agree += 1
        kept = n_fresh + agree                           # queries whose KV stays (causal, right tokens)
        nxt = greedy[kept]                               # the correction, or the token after a whole draft
        self.cache.crop(-(len(queries) - kept))
        if kept:
            self.last = logits[kept - 1]
        self.pos += kept
        self.fresh = [nxt]                               # accepted now, cached by the next round
        # the masks followed the whole draft: only then were they conditioned on the right tokens
        self.draft = self._draft(logits, n_fresh + len(draft), width) if agree == len(draft) else []
        self._accept(draft[:agree] + [nxt])
        if not self.row.done:                            # a lookup draft, when there is one, beats the masks'
            self.draft = self._lookup() or self.draft

    def _draft(self, logits: torch.Tensor, start: int, width: int) -> list[int]:
        """The guesses of the mask block at query `start` [W - 1]: its slot 0 stands for the token
        just accepted, and slot j's logits (shifted) guess the token after slot j."""
        return logits[start:start + width - 1].argmax(dim=-1).tolist()

    def _lookup(self) -> list[int]:
        """A draft by prompt lookup (config.lookup tokens at most, none when it is 0), from
        the document in reading order with the middle so far at its end."""
        room = min(self.config.lookup, self.config.max_tokens - len(self.row.ids) - 1)
        return lookup_draft(self.text_order + self.row.ids, room)

    def _accept(self, tokens: list[int]) -> None:
        """Append accepted tokens to the middle with the engines' stop rules (Engine.take); what
        comes after a stop is dropped, as greedy decoding would never produce it."""
        for token in tokens:
            self.engine.take(self.row, token, self.config)
            if self.row.done:
                return

    # ---------------------------------------------------------------- forwards

    def _prefill(self, row) -> torch.Tensor:
        """The prompt, causal, over the KV it shares with the document's last request (row.past,
        exact: as in the AR and block engines), which then keeps this prompt's KV; only the last
        position is projected onto the vocabulary."""
        ids, mask, positions, self.cache = prefill_inputs([row.prompt], [row.past], self.engine.ids.pad,
                                                          self.device, self.lm.model.config)
        logits, _ = self.lm.forward(self.cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=True, **self.engine.keep_last)
        remember_prompts(self.engine.kv_store, [row], self.cache, mask)
        row.nfe += 1                                     # the prefill counts, as in the AR and block engines
        self.pos = len(row.prompt)
        return logits[0, -1].float().masked_fill(self.engine.banned, float("-inf"))

    def _forward(self, queries: list[int], verified: int) -> torch.Tensor:
        """Logits [Q, V] (banned ids at -inf) of the queries over the cache; the first `verified`
        queries attend causally, the masks see them all and each other."""
        q = len(queries)
        inner = torch.ones((q, q), dtype=torch.bool, device=self.device).tril()
        inner[verified:, verified:] = True
        cached = torch.ones((q, self.pos), dtype=torch.bool, device=self.device)
        mask = torch.cat([cached, inner], dim=1)[None, None]                  # [1, 1, Q, K + Q]
        positions = self.pos + torch.arange(q, device=self.device)[None]      # [1, Q]
        logits, _ = self.lm.forward(self.cache, input_ids=torch.tensor([queries], device=self.device),
                                    attention_mask=mask, position_ids=positions, use_cache=True)
        return logits[0].float().masked_fill(self.engine.banned, float("-inf"))
