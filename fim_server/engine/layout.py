"""Token-accurate context budget: keep the text nearest the cursor on both sides."""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX_SHARE = 0.75      # of the budget, when both sides are too long: code before the cursor matters more
CHARS_PER_TOKEN = 8      # first guess for how much text to tokenize; grown until the budget is covered


@dataclass(frozen=True)
class Context:
    prefix_ids: list[int]
    suffix_ids: list[int]
    truncated: bool          # some of the document was left out


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _tail_tokens(tokenizer, text: str, want: int) -> tuple[list[int], bool]:
    """The last `want` tokens of text (tokenizing only as much text as needed)."""
    window = max(64, want * CHARS_PER_TOKEN)
    while True:
        piece = text[-window:]
        ids = _encode(tokenizer, piece)
        whole = len(piece) == len(text)
        if len(ids) > want or whole:
            # drop the first token of a partial window too: it may be a fragment of a longer token
            cut = ids[-want:] if want else []
            return cut, len(ids) > want or (not whole)
        window *= 2


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
    rest; a side that needs less than its share gives the remainder to the other side.
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
    prefix_ids = p_ids[len(p_ids) - p_want:] if p_want else []
    return Context(prefix_ids, s_ids[:s_want], truncated=True)
