"""Token-accurate context budget: keep the text nearest the cursor on both sides."""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX_SHARE = 0.75      # of the budget, when both sides are too long: code before the cursor matters more
CHARS_PER_TOKEN = 8      # first guess for how much text to tokenize; grown until the budget is covered
ANCHOR_LINES = 4         # a cut prefix starts at a line whose number is a multiple of this: typing near
                         # the cursor then leaves the kept prefix's first tokens (and their KV) unchanged


@dataclass(frozen=True)
class Context:
    prefix_ids: list[int]
    suffix_ids: list[int]
    truncated: bool          # some of the document was left out


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _tail_window(tokenizer, text: str, want: int) -> tuple[int, list[int]]:
    """(start, tokens of text[start:]): the shortest doubling tail with more than `want` tokens,
    or the whole text (start 0)."""
    window = max(64, want * CHARS_PER_TOKEN)
    while True:
        start = max(0, len(text) - window)
        ids = _encode(tokenizer, text[start:])
        if len(ids) > want or start == 0:
            return start, ids
        window *= 2


def _tail_tokens(tokenizer, text: str, want: int) -> tuple[list[int], bool]:
    """The last `want` tokens of text (tokenizing only as much text as needed)."""
    start, ids = _tail_window(tokenizer, text, want)
    # a partial window's first token may be a fragment of a longer token: it goes first
    cut = ids[-want:] if want else []
    return cut, len(ids) > want or start > 0


def _anchored_tail(tokenizer, text: str, want: int) -> list[int] | None:
    """Tokens of text[a:] for the earliest anchor a (the start of a line whose number in the
    document is a multiple of ANCHOR_LINES) with at most `want` tokens; None if none fits."""
    start, _ = _tail_window(tokenizer, text, want)
    line = text.count("\n", 0, start)              # number of the line holding `start`
    anchors = [0] if start == 0 else []
    for i, ch in enumerate(text[start:], start):
        if ch == "\n":
            line += 1
            if line % ANCHOR_LINES == 0 and i + 1 < len(text):
                anchors.append(i + 1)
    best, lo, hi = None, 0, len(anchors) - 1       # token count falls as the anchor moves right
    while lo <= hi:
        mid = (lo + hi) // 2
        ids = _encode(tokenizer, text[anchors[mid]:])
        if len(ids) <= want:
            best, hi = ids, mid - 1
        else:
            lo = mid + 1
    return best or None


def _head_tokens(tokenizer, text: str, want: int) -> tuple[list[int], bool]:
    window = max(64, want * CHARS_PER_TOKEN)
    while True:
        piece = text[:window]
        ids = _encode(tokenizer, piece)
        whole = len(piece) == len(text)
        if len(ids) > want or whole:
            return (ids[:want] if want else []), len(ids) > want or (not whole)
        window *= 2


def fit_context(tokenizer, prefix: str, suffix: str, budget: int) -> Context:
    """Tokenize prefix and suffix separately, trimmed to `budget` tokens in total.

    When both sides do not fit, the prefix gets PREFIX_SHARE of the budget and the suffix the
    rest; a side that needs less than its share gives the remainder to the other side. A cut
    prefix starts at an anchor line (see ANCHOR_LINES) when one fits, and the suffix takes the
    tokens that leaves over, so the total can fall a few lines short of the budget.
    """
    if budget < 0:
        raise ValueError("context budget is smaller than the middle it must hold")
    p_ids, p_cut = _tail_tokens(tokenizer, prefix, budget + 1)
    s_ids, s_cut = _head_tokens(tokenizer, suffix, budget + 1)
    if len(p_ids) + len(s_ids) <= budget and not p_cut and not s_cut:
        return Context(p_ids, s_ids, truncated=False)
    p_want = min(len(p_ids), max(budget - len(s_ids), math.ceil(PREFIX_SHARE * budget)))
    s_want = min(len(s_ids), budget - p_want)
    p_want = min(len(p_ids), budget - s_want)
    if p_want == len(p_ids) and not p_cut:
        prefix_ids = p_ids
    else:
        prefix_ids = _anchored_tail(tokenizer, prefix, p_want) or (p_ids[len(p_ids) - p_want:] if p_want else [])
    s_want = min(len(s_ids), budget - len(prefix_ids))
    return Context(prefix_ids, s_ids[:s_want], truncated=True)
