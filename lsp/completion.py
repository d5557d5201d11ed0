"""From the worker's middle to the text shown at the cursor, and typed-ahead reuse of it.

`finish` applies the engine's post-processing (fim_server.postprocess: indentation, suffix
overlap) and then the editor's rules: a single-line completion never leaves its line; a
multi-line one stays inside the cursor's block, stops where it would repeat the suffix,
and is capped at max_lines. An empty or blank result means "show nothing".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fim_server.postprocess import postprocess

from .cursor import CursorContext


def indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _min_indent(ctx: CursorContext) -> int:
    """Lines after the first must be indented at least this much to stay in the block."""
    if not ctx.line_before.strip():
        return indent_width(ctx.line_before)          # empty line: the cursor's column
    return indent_width(ctx.line_before) + 1          # after a block opener: its body


def _first_code_line(text: str) -> str:
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def _multi_line(text: str, ctx: CursorContext, max_lines: int) -> str:
    lines = text.split("\n")
    floor = _min_indent(ctx)
    repeat = _first_code_line(ctx.line_after + ctx.suffix)
    kept: list[str] = []
    for index, line in enumerate(lines[:max_lines]):
        if line.strip() == repeat and repeat:
            break                                     # the suffix follows from here on
        if index > 0 and line.strip() and indent_width(line) < floor:
            break                                     # leaves the cursor's block
        kept.append(line)
    return "\n".join(kept).rstrip()


def finish(middle: str, ctx: CursorContext, max_lines: int) -> str:
    """The text to insert at the cursor ("" for nothing)."""
    text = postprocess(middle, ctx.prefix, ctx.suffix, ctx.single_line)
    if ctx.single_line:
        text = text.split("\n", 1)[0]                 # a leading newline leaves nothing
        if not ctx.line_after.strip():
            text = text.rstrip()
    else:
        text = _multi_line(text, ctx, max_lines)
    return text if text.strip() else ""


# ---------------------------------------------------------------- typed-ahead reuse


@dataclass(frozen=True)
class Shown:
    offset: int       # cursor offset when the completion was shown
    prefix: str       # the (clipped) context it was computed for
    suffix: str
    text: str         # what is on screen after the cursor


class TypedAhead:
    """The completion on screen per document. When the user types its first characters,
    the rest is the answer: no worker call."""

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self._shown: dict[str, Shown] = {}

    def remember(self, uri: str, ctx: CursorContext, text: str) -> None:
        self._shown.pop(uri, None)
        if text:
            self._shown[uri] = Shown(ctx.offset, ctx.prefix, ctx.suffix, text)
            while len(self._shown) > self.capacity:
                self._shown.pop(next(iter(self._shown)))

    def forget(self, uri: str) -> None:
        self._shown.pop(uri, None)

    def lookup(self, uri: str, ctx: CursorContext) -> Optional[str]:
        """The rest of the shown completion when, since it was shown, the user only typed
        its first characters (same text after the cursor, same text before the old cursor)."""
        old = self._shown.get(uri)
        if old is None:
            return None
        typed_len = ctx.offset - old.offset
        if not 0 < typed_len < len(old.text) or ctx.suffix != old.suffix:
            return None
        typed = old.text[:typed_len]
        if not ctx.prefix.endswith(typed):
            return None
        before = ctx.prefix[: len(ctx.prefix) - typed_len]
        common = min(len(before), len(old.prefix))   # clipped windows may start at different lines
        if before[len(before) - common:] != old.prefix[len(old.prefix) - common:]:
            return None
        rest = old.text[typed_len:]
        self._shown[uri] = Shown(ctx.offset, ctx.prefix, ctx.suffix, rest)
        return rest
