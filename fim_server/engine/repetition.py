"""The repetition guard: a middle caught in a loop (`b, b, b, b, ...`, one line again and again)
is cut after the loop's first copy, and an engine that decodes left to right stops there instead
of spending forwards on the loop up to max_tokens (DecodeConfig.repetition_guard).

On the middle's token ids. A loop is a unit of 1-16 tokens repeated back to back: 4 copies for
a unit of up to 3 tokens (`b,` twice in `b, b, b, b` is still code: `f(b, b)`), 3 copies for a
longer one. A unit of whitespace only is never a loop (blank lines, indentation).
"""

from __future__ import annotations

from typing import Optional

MAX_UNIT = 16               # tokens in the longest unit looked for (a short line)
SHORT_UNIT = 3              # units up to this long need SHORT_COPIES copies, longer ones LONG_COPIES
SHORT_COPIES = 4
LONG_COPIES = 3


def copies_needed(unit: int) -> int:
    return SHORT_COPIES if unit <= SHORT_UNIT else LONG_COPIES


def loop_at(ids: list[int], end: int, blank: frozenset[int]) -> Optional[int]:
    """When ids[:end] ends with a loop, the length to keep (up to the end of its first copy)."""
    for unit in range(1, MAX_UNIT + 1):
        span = unit * copies_needed(unit)
        if span > end:
            continue
        start = end - span
        first = ids[start:start + unit]
        if ids[start:end] == first * (span // unit) and not blank.issuperset(first):
            return start + unit
    return None


def loop_cut(ids: list[int], blank: frozenset[int], new: Optional[int] = None) -> Optional[int]:
    """The length to cut `ids` to at the first loop complete within its last `new` tokens (a
    left-to-right engine checks only what it just appended), or anywhere when new is None (an
    engine that fills the middle in any order checks it once, whole); None when there is none."""
    first_end = 1 if new is None else max(1, len(ids) - new + 1)
    for end in range(first_end, len(ids) + 1):
        cut = loop_at(ids, end, blank)
        if cut is not None:
            return cut
    return None
