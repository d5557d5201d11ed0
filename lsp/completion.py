"""From the worker's middle to the text shown at the cursor.

The worker's text is already post-processed (fim_server.engine.postprocess: indentation,
suffix overlap), once, by the engine; `finish` applies only the editor's rules on top: a
single-line completion never leaves its line; a multi-line one stays inside the cursor's
block, stops where it would repeat the suffix, and is capped at max_lines. Where no rule
applies the worker's text is shown as it is. An empty or blank result means "show nothing".
"""

from __future__ import annotations

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
    text = middle
    if ctx.single_line:
        text = text.split("\n", 1)[0]                 # a leading newline leaves nothing
        if not ctx.line_after.strip():
            text = text.rstrip()
    else:
        text = _multi_line(text, ctx, max_lines)
    return text if text.strip() else ""
