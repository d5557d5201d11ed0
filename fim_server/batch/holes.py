"""Holes in a text: where the marker sits, what the model sees for each hole, and the filled text.

A hole is the marker itself. It is "own-line" when its line holds nothing else but
whitespace; the indentation before it stays in the prefix, so the model writes at that depth.

Several holes in one file are filled in order, earlier first. For hole k the model sees
    prefix = the text before hole k, with holes 0..k-1 replaced by their fills
             (a hole that failed is shown as nothing)
    suffix = the text after hole k, with holes k+1.. removed: an own-line hole's whole line
             goes, an inline hole's marker goes
so no marker ever reaches the model, and hole k depends only on the text and the earlier fills:
the same inputs always give the same requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

MARKER = "<FILL>"


@dataclass(frozen=True)
class Hole:
    start: int          # character offsets of the marker in the original text
    end: int
    line: int           # 1-based line and column of the marker, for messages
    column: int
    line_start: int     # the marker's line, newline included: removed when an own-line hole waits
    line_end: int
    own_line: bool


def find_holes(text: str, marker: str = MARKER) -> list[Hole]:
    """Every occurrence of `marker`, left to right, never overlapping."""
    if not marker:
        raise ValueError("the hole marker must not be empty")
    holes, at = [], text.find(marker)
    while at >= 0:
        end = at + len(marker)
        line_start = text.rfind("\n", 0, at) + 1
        newline = text.find("\n", end)
        line_end = len(text) if newline < 0 else newline + 1
        rest = text[end:line_end].rstrip("\r\n")
        own = not text[line_start:at].strip() and not rest.strip()
        holes.append(Hole(start=at, end=end, line=text.count("\n", 0, at) + 1, column=at - line_start + 1,
                          line_start=line_start, line_end=line_end, own_line=own))
        at = text.find(marker, end)
    return _one_own_line_per_line(holes)


def _one_own_line_per_line(holes: list[Hole]) -> list[Hole]:
    """Two markers on one line are both inline (their line holds more than one marker)."""
    lines: dict[int, int] = {}
    for h in holes:
        lines[h.line_start] = lines.get(h.line_start, 0) + 1
    return [h if lines[h.line_start] == 1 else _inline(h) for h in holes]


def _inline(h: Hole) -> Hole:
    return Hole(h.start, h.end, h.line, h.column, h.line_start, h.line_end, own_line=False)


def context(text: str, holes: Sequence[Hole], fills: Sequence[Optional[str]], k: int) -> tuple[str, str]:
    """(prefix, suffix) the model sees for hole k; `fills` covers at least holes 0..k-1."""
    parts, pos = [], 0
    for j in range(k):
        parts += [text[pos:holes[j].start], fills[j] or ""]
        pos = holes[j].end
    parts.append(text[pos:holes[k].start])
    prefix = "".join(parts)
    parts, pos = [], holes[k].end
    for h in holes[k + 1:]:
        cut = (h.line_start, h.line_end) if h.own_line else (h.start, h.end)
        parts.append(text[pos:cut[0]])
        pos = cut[1]
    parts.append(text[pos:])
    return prefix, "".join(parts)


def fill(text: str, holes: Sequence[Hole], fills: Sequence[Optional[str]]) -> str:
    """The text with each hole replaced by its fill; a hole whose fill is None keeps its marker."""
    parts, pos = [], 0
    for h, f in zip(holes, fills):
        parts += [text[pos:h.start], text[h.start:h.end] if f is None else f]
        pos = h.end
    parts.append(text[pos:])
    return "".join(parts)
