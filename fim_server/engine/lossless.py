"""Lossless block decoding: drafts verified by the same network's own next-token predictions
(SDLM's self-speculative mode; blockwise parallel decoding, Stern et al. 2018). The output is
token for token the network's greedy left-to-right (causal) decoding of the PSM prompt; drafts
only save forwards when they agree with that decoding.

One forward per round, over the cache (the prompt and every accepted token, causal, so exact):

    queries   lead    the token the last round accepted last, not cached yet    causal
                      (the first round, the prefill: the prompt's uncached tokens)
              draft   a tree of guesses to verify; a node sees the lead and     causal along a branch
                      its ancestors
              masks   block_size slots right after the last lead token          the lead, each other

The prefill's draft is what prompt lookup finds for the cursor itself (or the next-token table's
chain), so a middle that starts as something the document already says can be accepted from the
very first forward. Before, the prefill only ran the masks, and the first draft was verified one
forward later: with the bundled block coder (block-s9), verifying drafts in the prefill raised
tokens per forward from 2.49 / 2.61 / 2.28 to 2.86 / 3.00 / 2.42 on HumanEval single-line,
multi-line and repository middles (bench/results/lossless-prefill-draft.json, 2-core EPYC). In
the text below, the fresh token is the last lead token.

Shifted logits (the AR-initialised block coders): the logits at a position are the causal
prediction of the token after it. Verification walks the draft from the fresh token along those
predictions: the nodes it meets are kept, plus the prediction after the last of them (a
correction, always right, or at a leaf the token after the whole branch). That token is cached by
the next round. The kept queries' KV stays in the cache (packed when the branch is not the first);
the rest is dropped.

The next draft is one tree of up to config.lookup_candidates + 1 branches (verified at once, as
Medusa and SpecInfer verify trees):
- prompt lookup (Saxena's prompt lookup decoding): the up to config.lookup tokens that followed
  earlier occurrences of the last one to three tokens, in the document (suffix, then prefix, then
  the middle so far, so that the search ends at the cursor), latest and longest match first,
  different continuations only. Code repeats its names and lines, so these are often right.
- the masks' guesses: the masks sat right after the fresh token, slot j standing for the token
  j + 1 after it, so when the round kept k draft tokens nxt is at slot k and slots k.. guess the
  tokens after nxt (the masks see the fresh token, not the kept draft). Masks placed after the
  draft would be conditioned on it, and be of use only when all of it is right. Reusing the
  later slots after a partly kept draft (before: only when nothing was kept) raised tokens per
  forward by 0.00-0.03 on HumanEval and repository middles (bundled block-s9, 2-core EPYC).
- the masks' second choices (config.mask_alternatives): the chain of guesses again with one slot's
  second-likeliest token, for the slots where that is likeliest to be reached and right (a pruned
  Medusa tree). With the bundled block coder, two such chains raised tokens per forward from
  2.45 / 2.52 / 2.23 to 2.49 / 2.61 / 2.28 on HumanEval single-line, multi-line and repository
  middles (bench/results/lossless-mask-alternatives.json, 2-core EPYC); a third added nothing.
- the next-token table's chain (engine/ngrams.py, when the checkpoint has one), in rounds
  where prompt lookup found nothing: the token that most often followed the last three (or
  two) tokens in the training corpus, appended and asked again, up to config.ngram tokens.
  Common idioms the document has not used yet. Added in every round it drafted a little more
  but cost as much (its query slots) as it saved on this CPU; only where lookup fails it keeps
  most of the gain for a third of the slots.
A wrong branch costs only its query slots. With the bundled block coder, against the drafts of
before (one lookup chain with the masks after it, a first round that only drafts): 1.97 -> 2.71
tokens per forward on 150 HumanEval single-line middles and 1.87 -> 2.46 on 60 multi-line ones,
p50 0.62x -> 0.54x the AR twin's on this 2-core CPU (bench/results/lossless-drafts-versions.txt).
Against one lookup chain with the masks' branch, the tree's wider forward costs about what its
saved rounds gain, so the p50 barely moves.

Unshifted models (logit i predicts token i) make no causal next-token prediction, so they
have no lossless mode here. Rows are decoded one at a time: their acceptance lengths differ,
so their caches would not stay aligned.
"""

from __future__ import annotations

from typing import Callable

import torch

from fim_server.models.family import fim_parts
from fim_server.wire.options import DecodeConfig

from .kv import keep_positions
from .prefix_store import prefill_inputs, remember_prompts



def decode_lossless(engine, rows: list, config: DecodeConfig, poll: Callable[[], None]) -> None:
    """Fill each row's `ids` (and nfe, stop_reason) with the network's greedy causal middle;
    `poll` (the engine's cancellation check over the whole batch) runs between rounds."""
    for row in rows:
        poll()                                  # a cancelled row is finished here
        if not row.done:
            _Round(engine, row, config).run(poll)


def text_order(prompt: list[int], ids) -> list[int]:
    """A PSM prompt `... <pre> P <suf> S <mid>` or an SPM one `... <suf> S <pre> P <mid>` (ids:
    the family's TokenIds) as S + P, so that the end of the result is the text just before the
    cursor; the prompt as it is when it lacks one of the three FIM tokens."""
    parts = fim_parts(list(prompt), ids.fim_prefix, ids.fim_suffix, ids.fim_middle)
    return list(prompt) if parts is None else parts[1] + parts[0]


def lookup_drafts(tokens: list[int], length: int, count: int = 1, longest: int = 3,
                  shortest: int = 1) -> list[list[int]]:
    """Prompt lookup (as transformers' prompt_lookup_num_tokens), up to `count` candidates: the
    `length` tokens that followed each earlier occurrence of the last n tokens, n from `longest`
    down to `shortest`, latest occurrence first. A continuation already covered by an earlier
    candidate (equal to its start) is skipped; [] when nothing recurs or length <= 0."""
    found: list[list[int]] = []
    if length <= 0 or count <= 0:
        return found
    for n in range(longest, shortest - 1, -1):
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] != tail:
                continue
            follow = tokens[start + n:start + n + length]
            if follow and not any(seen[:len(follow)] == follow for seen in found):
                found.append(follow)
                if len(found) == count:
                    return found
    return found


def mask_branches(top: list[list[int]], probs: list[list[float]], alternatives: int) -> list[list[int]]:
    """The masks' drafts from each slot's best tokens `top` [S, k] and their probabilities: the
    chain of first choices, then up to `alternatives` chains that take one slot's second choice
    instead, the slots whose second choice is likeliest to be reached and right first (a pruned
    Medusa tree: the reach is the product of the first choices before the slot)."""
    first = [choices[0] for choices in top]
    scores, reach = [], 1.0
    for j, p in enumerate(probs):
        if len(p) > 1:
            scores.append((reach * p[1], -j))
        reach *= p[0]
    picks = [-j for _, j in sorted(scores, reverse=True)[:alternatives]]
    return [first] + [first[:j] + [top[j][1]] + first[j + 1:] for j in picks]


class Draft:
    """Tokens to verify in one forward, as a tree: node i is `tokens[i]`, the child of node
    `parents[i]` (-1: the root, the fresh token). Parents come before their children, and the
    first candidate's nodes come first, so accepting along it keeps the cache contiguous."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.children: dict[tuple[int, int], int] = {}       # (parent, token) -> node

    @classmethod
    def trie(cls, branches: list[list[int]]) -> "Draft":
        """The candidates merged on their shared starts."""
        draft = cls()
        for branch in branches:
            node = -1
            for token in branch:
                child = draft.children.get((node, token))
                if child is None:
                    child = len(draft.tokens)
                    draft.tokens.append(token)
                    draft.parents.append(node)
                    draft.children[(node, token)] = child
                node = child
        return draft

    def __len__(self) -> int:
        return len(self.tokens)

    def child(self, node: int, token: int) -> int | None:
        return self.children.get((node, token))

    def depths(self) -> list[int]:
        """Each node's depth below the root, 0 for the root's children."""
        out: list[int] = []
        for parent in self.parents:
            out.append(out[parent] + 1 if parent >= 0 else 0)
        return out

    def lineage(self) -> torch.Tensor:
        """[N, N] bool: node i sees node j when j is i or an ancestor of i."""
        n = len(self.tokens)
        seen = torch.eye(n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                seen[i] |= seen[parent]
        return seen


class _Round:
    """One row's decoding state: the cache, the token accepted last and not cached yet (fresh)
    and the draft to verify."""

    def __init__(self, engine, row, config: DecodeConfig):
        self.engine, self.row, self.config = engine, row, config
        self.lm = engine.lm
        self.device = engine.lm.device
        self.mask_id = engine.ids.mask
        self.pos = 0                                     # position of the first uncached token
        self.fresh = 0                                   # the token accepted last, set by each round
        self.text_order = text_order(list(row.prompt), engine.ids)
        self.draft = Draft()                             # the next round's tree to verify
        self._prefill(row)

    def run(self, poll) -> None:
        """Rounds until the row finishes; `poll` (between rounds) finishes it when cancelled."""
        steps = 0
        while not self.row.done:
            if steps >= self.config.step_cap:
                self.row.finish("steps")
                return
            self._advance(*self._round([self.fresh]))
            steps += 1
            poll()

    # ---------------------------------------------------------------- one round

    def _round(self, lead: list[int]) -> tuple[torch.Tensor, list[int], int]:
        """One forward over the cache: `lead` (the tokens not cached yet, causal: the prompt's rest
        at the prefill, then the fresh token), the draft and a block of masks. Keeps the KV of the
        lead and of the draft nodes it accepts; returns the logits [1 + N + W, V] (after the last
        lead token, the N nodes, the W masks), the accepted path and the token after it."""
        draft, width = self.draft, self._width()
        logits = self._forward(lead, draft, width)
        self.row.nfe += 1
        path, nxt = self._verify(logits, draft)
        kept = list(range(len(lead))) + [len(lead) + node for node in path]    # causal, right tokens
        self._keep(kept, len(lead) + len(draft) + width)
        self.pos += len(kept)
        return logits, path, nxt

    def _advance(self, logits: torch.Tensor, path: list[int], nxt: int) -> None:
        """Accept a round's path and the token after it (fresh: cached by the next round), and
        draft the next round."""
        self.fresh = nxt
        # the masks sit right after the last lead token: slot j stands for the token j + 1 after
        # it, so nxt is at slot len(path) and the guesses from there on are of the tokens after nxt
        width = logits.shape[0] - 1 - len(self.draft)   # the round's masks
        guesses = self._guesses(logits, 1 + len(self.draft), width, skip=len(path))
        self._accept([self.draft.tokens[node] for node in path] + [nxt])
        if not self.row.done:
            self._next_draft(guesses)

    def _verify(self, logits: torch.Tensor, draft: Draft) -> tuple[list[int], int]:
        """Walk the draft along the network's own causal predictions: the nodes it agrees with
        (a path from the root) and the prediction after the last of them, the correction or,
        at a leaf, the token after the whole branch."""
        greedy = logits[:1 + len(draft)].argmax(dim=-1).tolist()     # one host sync: after fresh, after each node
        path, node, token = [], -1, greedy[0]
        while (child := draft.child(node, token)) is not None:
            path.append(child)
            node, token = child, greedy[1 + child]
        return path, token

    def _next_draft(self, guesses: list[list[int]]) -> None:
        """Lookup's candidates, the masks' branches (`guesses`: none before the first forward),
        then the next-token table's chain, merged into one tree; each no longer than the room
        left after the fresh token."""
        room = max(0, self.config.max_tokens - len(self.row.ids) - 1)
        seen = self.text_order + self.row.ids
        found = lookup_drafts(seen, min(self.config.lookup, room), self.config.lookup_candidates)
        branches = found + [branch[:room] for branch in guesses]
        # the table's chain only where the document does not repeat itself: there it adds most
        # (lookup found nothing), elsewhere its query slots cost about what it saves (CPU)
        if not found and self.config.ngram and self.engine.ngrams is not None:
            branches.append(self.engine.ngrams.chain(seen, min(self.config.ngram, room)))
        self.draft = Draft.trie(branches)

    def _width(self) -> int:
        """Mask slots: a block, or the room left, at least 1."""
        return min(self.config.block_size, max(1, self.config.max_tokens - len(self.row.ids)))

    def _guesses(self, logits: torch.Tensor, start: int, width: int, skip: int = 0) -> list[list[int]]:
        """The mask block's branches (mask_branches) from its slots at query `start`, the first
        `skip` guesses left out (they stood for draft tokens already kept): its slot 0 stands for
        the token just accepted, and slot j's logits (shifted) guess the token after slot j."""
        probs = logits[start + skip:start + width - 1].softmax(dim=-1)        # [W - 1 - skip, V]
        top = probs.topk(2 if self.config.mask_alternatives else 1, dim=-1)   # one host sync
        return mask_branches(top.indices.tolist(), top.values.tolist(), self.config.mask_alternatives)

    def _accept(self, tokens: list[int]) -> None:
        """Append accepted tokens to the middle with the engines' stop rules (Engine.take); what
        comes after a stop is dropped, as greedy decoding would never produce it."""
        for token in tokens:
            self.engine.take(self.row, token, self.config)
            if self.row.done:
                return

    # ---------------------------------------------------------------- forwards

    def _prefill(self, row) -> None:
        """The first round: the prompt, causal, over the KV it shares with the document's last
        request (row.past, exact: as in the AR and block engines), which then keeps this prompt's
        KV; after it the draft that prompt lookup (or the table) finds for the cursor, and a mask
        block. The prompt's last position gives the first token (causal, so exactly greedy's), a
        draft that agrees gives more, and the masks a first draft for the next round."""
        ids, valid, _, self.cache = prefill_inputs([row.prompt], [row.past], self.engine.ids.pad,
                                                   self.device, self.lm.model.config)
        assert bool(valid.all()), "one row: no padding"  # so every cached key is seen, as in a round
        self.pos = self.cache.get_seq_length()           # the reused tokens
        self._next_draft([])                             # no masks' guesses yet
        logits, path, nxt = self._round(ids[0].tolist())
        remember_prompts(self.engine.kv_store, [row], self.cache, valid)    # the prompt: the first K slots
        self._advance(logits, path, nxt)

    def _forward(self, lead: list[int], draft: Draft, width: int) -> torch.Tensor:
        """Logits [1 + N + W, V] (banned ids at -inf) after the last of the T `lead` tokens, after
        each of the N draft nodes and at the W masks, over the cache: the lead tokens see the
        cache and each other causally, a node the lead, its ancestors and itself, the masks the
        lead and each other. A node sits at its depth after the last lead token, mask slot j at
        j + 1."""
        t, n = len(lead), len(draft)
        q = t + n + width
        inner = torch.zeros((q, q), dtype=torch.bool)
        inner[:t, :t] = torch.ones((t, t), dtype=torch.bool).tril()
        inner[t:, :t] = True
        inner[t:t + n, t:t + n] = draft.lineage()
        inner[t + n:, t + n:] = True                      # masks: the lead and each other
        cached = torch.ones((q, self.pos), dtype=torch.bool)
        mask = torch.cat([cached, inner], dim=1)[None, None].to(self.device)          # [1, 1, Q, K + Q]
        offsets = list(range(t)) + [t + d for d in draft.depths()] + list(range(t, t + width))
        positions = self.pos + torch.tensor([offsets], device=self.device)             # [1, Q]
        queries = lead + draft.tokens + [self.mask_id] * width
        keep = {"logits_to_keep": 1 + n + width} if self.engine.keep_last else {}
        logits, _ = self.lm.forward(self.cache, input_ids=torch.tensor([queries], device=self.device),
                                    attention_mask=mask, position_ids=positions, use_cache=True, **keep)
        return logits[0, -(1 + n + width):].float().masked_fill(self.engine.banned, float("-inf"))

    def _keep(self, kept: list[int], queries: int) -> None:
        """Of this round's queries' KV, keep those at `kept` (ascending), packed after the cache."""
        if kept == list(range(len(kept))):
            self.cache.crop(-(queries - len(kept)))
        else:
            keep_positions(self.cache, self.pos, kept)
