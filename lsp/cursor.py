"""What the model sees around the cursor: positions clamped, context clipped, mode decided.

Pure text, no LSP types, safe to run in a thread (it reads one immutable string). Any
position is accepted: a line past the end means the end of the document, a character past
the end of its line means the end of that line.
"""

from __future__ import annotations

from dataclasses import dataclass

from fim_server.wire.protocol import encodable

PREFIX_CHARS = 16_000      # text before the cursor sent to the worker, at most
SUFFIX_CHARS = 4_000       # text after it; the engine trims further to the model's context
BLOCK_OPENERS = (":", "{", "(", "[")


@dataclass(frozen=True)
class CursorContext:
    prefix: str            # clipped text before the cursor (starts at a line start)
    suffix: str            # clipped text after the cursor (ends at a line end)
    offset: int            # cursor offset in the whole document, in code points
    line: int              # the cursor's line after clamping
    character: int         # its column in client units after clamping
    line_before: str       # the cursor's line up to the cursor
    line_after: str        # the rest of the cursor's line
    single_line: bool      # complete only the rest of this line
    binary: bool           # NUL bytes near the cursor: not text, no completion


def unit_length(text: str, encoding: str) -> int:
    """Length of `text` in the client's position units (utf-16 unless negotiated)."""
    if encoding == "utf-32":
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def column_to_index(line: str, character: int, encoding: str) -> int:
    """Code-point index of a client column, clamped to [0, len(line)]; a column inside a
    surrogate pair or UTF-8 sequence rounds down to the character's start."""
    if character <= 0:
        return 0
    if encoding == "utf-32":
        return min(character, len(line))
    units = 0
    for index, char in enumerate(line):
        units += unit_length(char, encoding)
        if units > character:
            return index
    return len(line)


def _line_span(source: str, line: int) -> tuple[int, int, int]:
    """(start, end, line) of line `line`, clamped to the last line; end excludes the newline."""
    start = 0
    for current in range(max(0, line)):
        newline = source.find("\n", start)
        if newline < 0:
            line = current
            break
        start = newline + 1
    end = source.find("\n", start)
    end = len(source) if end < 0 else end
    if end > start and source[end - 1] == "\r":
        end -= 1
    return start, end, max(0, line)


def is_single_line(line_before: str, line_after: str) -> bool:
    """Only the rest of the line when the cursor is inside a line or at the end of a
    non-empty one; several lines on an empty line or right after a block opener."""
    if line_after.strip():
        return True
    before = line_before.rstrip()
    return bool(before) and not before.endswith(BLOCK_OPENERS)


def _clip_prefix(source: str, offset: int, limit: int) -> str:
    start = max(0, offset - limit)
    if start > 0:                       # start at a whole line the model can read
        newline = source.find("\n", start, offset)
        start = newline + 1 if newline >= 0 else start
    return source[start:offset]


def _clip_suffix(source: str, offset: int, limit: int) -> str:
    end = min(len(source), offset + limit)
    if end < len(source):
        newline = source.rfind("\n", offset, end)
        end = newline + 1 if newline >= 0 else end
    return source[offset:end]


def cursor_context(source: str, line: int, character: int, encoding: str = "utf-16",
                   prefix_chars: int = PREFIX_CHARS, suffix_chars: int = SUFFIX_CHARS) -> CursorContext:
    start, end, line = _line_span(source, line)
    text = source[start:end]
    index = column_to_index(text, character, encoding)
    offset = start + index
    prefix = encodable(_clip_prefix(source, offset, prefix_chars))
    suffix = encodable(_clip_suffix(source, offset, suffix_chars))
    line_before, line_after = encodable(text[:index]), encodable(text[index:])
    return CursorContext(
        prefix=prefix, suffix=suffix, offset=offset, line=line,
        character=unit_length(line_before, encoding), line_before=line_before,
        line_after=line_after, single_line=is_single_line(line_before, line_after),
        binary="\x00" in prefix or "\x00" in suffix,
    )
