"""One request's decoding state: [lead][canvas][suffix], the active block, and its stop rules.

lead   = optional BOS + prefix ids (everything left of the middle)
canvas = the middle being decoded: committed ids and mask ids; under the expand/delete policy
         its length changes as expand slots become two masks and delete slots disappear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fim_server.models.family import TokenIds
from .kv import RowKV
from .types import Stats


@dataclass(eq=False)            # rows are told apart by identity (tensors inside do not compare)
class Canvas:
    lead: list[int]
    canvas: list[int]
    suffix: list[int]
    ids: TokenIds
    expand_policy: bool            # True: DreamOn expand/delete; False: fixed canvas, cut at end token
    max_tokens: int
    block_size: int
    end_guard: bool = True         # a delete at the first undecided slot ends the middle there
    block_start: int = 0
    block_end: int = 0
    steps_in_block: int = 0
    kv: Optional[RowKV] = None     # cache captured at the last refresh (None: refresh next step)
    stale: bool = False            # cached slots were cut away (trailing delete) since the refresh
    moved: bool = False            # dual: an expand/delete moved the positions behind the block since the refresh
    shift: int = 0                 # dual: ... by this many positions in all
    key: str = ""                  # document key: its lead KV is stored for the next request
    past: Optional[RowKV] = None   # KV of lead[:reused] from the document's previous request
    lead_kv: Optional[RowKV] = None  # KV of the lead's first positions at the last refresh (kept past finish)
    done: bool = False
    stop_reason: str = ""
    nfe: int = 0
    steps: int = 0
    early_commits: int = 0         # steps where early commit took the whole block
    loop_checked: int = 0          # settled tokens the repetition guard has looked at
    stats: Optional[Stats] = None  # the request's stats (engine rows; a speculative draft has none)

    def __post_init__(self) -> None:
        self.block_end = min(self.block_size, len(self.canvas))

    # ---- geometry (layout indices) -------------------------------------------------

    def layout(self) -> list[int]:
        return self.lead + self.canvas + self.suffix

    def window(self, shifted: bool) -> tuple[int, int]:
        """Layout range [ws, we) whose outputs predict the active block's canvas positions."""
        s = 1 if shifted else 0
        off = len(self.lead)
        return off + self.block_start - s, off + self.block_end - s

    def query_range(self, mode: str, shifted: bool) -> tuple[int, int]:
        """Positions a cached step recomputes: the window (dual) or everything from it on (prefix)."""
        ws, we = self.window(shifted)
        return (ws, we) if mode == "dual" else (ws, len(self.lead) + len(self.canvas) + len(self.suffix))

    def kept_positions(self, mode: str, shifted: bool) -> list[int]:
        """Positions whose KV a refresh stores: the complement of the query range."""
        qs, qe = self.query_range(mode, shifted)
        n = len(self.lead) + len(self.canvas) + len(self.suffix)
        return list(range(0, qs)) + list(range(qe, n))

    def needs_refresh(self, refresh_every: int, kv_shift: bool = False) -> bool:
        """A full forward is due: no cache yet, cached slots gone, positions moved (unless the
        cached keys can be moved with them), or the periodic refresh."""
        periodic = refresh_every > 0 and self.steps_in_block % refresh_every == 0
        return self.kv is None or self.stale or (self.moved and not kv_shift) or periodic

    # ---- state ---------------------------------------------------------------------

    def block_masked(self) -> list[bool]:
        return [t == self.ids.mask for t in self.canvas[self.block_start:self.block_end]]

    def may_expand(self) -> bool:
        return self.expand_policy and self.ids.expand is not None and len(self.canvas) < self.max_tokens

    def commit(self, positions: list[int], tokens: list[int], mode: str) -> None:
        """Write tokens at block-relative positions, then apply expand/delete edits."""
        for i, tok in zip(positions, tokens):
            self.canvas[self.block_start + i] = tok
        if self.expand_policy:
            self._apply_edits(sorted(positions, reverse=True), mode)
        self.steps += 1
        self.steps_in_block += 1

    def _apply_edits(self, positions_desc: list[int], mode: str) -> None:
        # right to left so earlier block indices stay valid while the canvas changes length
        for i in positions_desc:
            j = self.block_start + i
            tok = self.canvas[j]
            before = len(self.canvas)
            if tok == self.ids.expand and self.ids.expand is not None:
                self.canvas[j:j + 1] = [self.ids.mask, self.ids.mask]
                self.block_end += 1
            elif tok == self.ids.delete and self.ids.delete is not None:
                if self.end_guard and self.ids.mask not in self.canvas[:j]:
                    behind = len(self.canvas) > self.block_end
                    del self.canvas[j:]    # trailing deletes: the middle ends here
                    self.block_end = min(self.block_end, j)
                    # canvas slots behind the block were cached (dual): they are gone now
                    self.stale = self.stale or (behind and mode == "dual")
                else:
                    del self.canvas[j]
                    self.block_end -= 1
            else:
                continue
            if mode == "dual":             # the suffix behind the block moved: its cached keys are off
                self.moved = True
                self.shift += len(self.canvas) - before

    def end_allowed(self) -> list[bool]:
        """Per active-block slot: may an end/delete token be proposed there? With the guard, only
        at the first undecided slot of the canvas, so a middle cannot collapse from its tail."""
        width = self.block_end - self.block_start
        if not self.end_guard:
            return [True] * width
        first = self.first_mask()
        # and never before the first real token: an empty middle is not a completion
        return [self.block_start + i == first and first > 0 for i in range(width)]

    def first_mask(self) -> int:
        try:
            return self.canvas.index(self.ids.mask)
        except ValueError:
            return len(self.canvas)

    def end_index(self) -> Optional[int]:
        """Fixed policy: index of the first end token, if everything before it is decided."""
        if self.expand_policy:
            return None
        settled = self.first_mask()
        for j, tok in enumerate(self.canvas[:settled]):
            if tok in self.ids.end_of_middle:
                return j
        return None

    def advance_block(self) -> None:
        """Move to the next block once the active one has no masks left."""
        if any(self.block_masked()):
            return
        self.block_start = self.block_end
        self.block_end = min(self.block_start + self.block_size, len(self.canvas))
        self.steps_in_block = 0
        self.kv = None
        self.stale = self.moved = False
        self.shift = 0

    def finish(self, reason: str) -> None:
        self.done = True
        self.stop_reason = reason
        self.kv = None

    def middle_ids(self) -> list[int]:
        """The decoded middle: settled tokens, cut at the end token, masks and edit tokens dropped."""
        ids = self.canvas
        end = self.end_index()
        if end is not None:
            ids = ids[:end]
        drop = {self.ids.mask, self.ids.expand, self.ids.delete, *self.ids.end_of_middle}
        return [t for t in ids if t not in drop]

    def settled_ids(self) -> list[int]:
        """Tokens up to the first mask: what single-line mode can already judge."""
        drop = {self.ids.expand, self.ids.delete, *self.ids.end_of_middle}
        return [t for t in self.canvas[:self.first_mask()] if t not in drop]
