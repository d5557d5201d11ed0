"""Clean a generated middle before it is shown: shared by the diffusion and AR engines.

Pure text, no model. The document after insertion is prefix + middle + suffix; every rule
here looks at that document and removes only what repeats text the user already has.
`postprocess` runs once, in the engine, and is idempotent: running it on its own output
changes nothing (front-ends may apply their editor rules on top, never these again).
"""

from __future__ import annotations

OPENERS = {")": "(", "]": "[", "}": "{"}
QUOTES = "\"'`"
# trimmed only together with a duplicated closer, or when they are the whole rest of the line
PUNCTUATION = ";,"
TRIMMABLE = "".join(OPENERS) + QUOTES + PUNCTUATION
CONTEXT_LINES = 16           # prefix lines whose unclosed brackets a closer in the middle may close
MAX_PASSES = 8               # postprocess repeats its rules until nothing changes (a few passes at most)


def line_complete(middle: str) -> bool:
    """Single-line mode may stop: a newline follows some non-whitespace text of the middle.

    Leading newlines do not count: a middle that starts by opening a new line (cursor at the
    end of `def f():`) has not produced its line yet.
    """
    return "\n" in middle.lstrip()


def first_line(middle: str) -> str:
    """The middle up to (excluding) the first newline that follows non-whitespace text."""
    body = middle.lstrip()
    if "\n" not in body:
        return middle
    lead = len(middle) - len(body)
    return middle[: lead + body.index("\n")]


def _last_line(text: str) -> str:
    return text.rsplit("\n", 1)[-1]


def _first_line_of(text: str) -> str:
    return text.split("\n", 1)[0]


def _same_lines(a: list[str], b: list[str]) -> bool:
    return len(a) == len(b) and all(x.rstrip() == y.rstrip() for x, y in zip(a, b))


def _trim_repeated_lines(middle: str, suffix: str, prefix: str | None) -> str:
    """Drop the middle's last whole lines when they are exactly the lines the suffix starts with.

    Only when the middle ends on a line boundary: either it ends with a newline (the suffix
    starts a line of its own) or the suffix's first line is blank (the middle's last line is
    complete). The middle's first line continues the prefix's last line, so it may only be
    dropped when the prefix is known and its last line is bare indentation: then dropping the
    whole middle leaves the document exactly as the user has it.
    """
    if middle.endswith("\n"):
        lines = middle[:-1].split("\n")
        following = suffix.split("\n")
    elif "\n" in suffix and not _first_line_of(suffix).strip():
        lines = middle.split("\n")
        following = suffix.split("\n")[1:]
    else:
        return middle   # the middle ends mid-line: no whole line of it stands alone
    doc_lines = list(lines)
    lowest = 1
    if prefix is not None and not _last_line(prefix).strip():
        doc_lines[0] = _last_line(prefix) + lines[0]
        lowest = 0
    for start in range(lowest, len(lines)):      # smallest start = longest repeated block
        block = doc_lines[start:]
        if any(line.strip() for line in block) and _same_lines(block, following[: len(block)]):
            kept = lines[:start]
            if not kept:
                return ""   # the whole middle repeats the suffix: inserting nothing is right
            return "\n".join(kept) + ("\n" if middle.endswith("\n") else "")
    return middle


def _unclosed(prefix: str | None, closer: str) -> int:
    """How many `closer`-kind brackets the prefix's last lines leave open (0 when unknown)."""
    if prefix is None:
        return 0
    recent = "\n".join(prefix.split("\n")[-CONTEXT_LINES:])
    return max(0, recent.count(OPENERS[closer]) - recent.count(closer))


def _closer_is_duplicate(middle: str, overlap: str, prefix: str | None = None) -> bool:
    """Whether the closers/quotes in `overlap` are surplus in the middle.

    A closing bracket is surplus when the middle closes more of that kind than it opens (it
    closes something opened before the cursor) and, with the suffix's, more than the prefix
    left open: `f(g(` + `a))` + `)` closes three of two, so one `)` goes, and `a)` then stays
    (two of two). A quote is surplus when the middle holds an odd number of it. `foo(bar(x))`
    before `)` is balanced: kept. Punctuation in the overlap rides along with a duplicated closer.
    """
    found = False
    for char in set(overlap):
        wanted = overlap.count(char)
        if char in OPENERS:
            surplus = middle.count(char) - middle.count(OPENERS[char])
            if surplus < wanted or surplus + wanted <= _unclosed(prefix, char):
                return False
            found = True
        elif char in QUOTES:
            # `lo"` or `Return x."""` end a string opened before the cursor
            count = middle.count(char)
            if count % 2 == 0 or count < wanted:
                return False
            found = True
    return found


def _trim_cursor_line(middle: str, suffix: str, prefix: str | None = None) -> str:
    """Drop closing characters at the middle's end that the suffix already starts with.

    `foo(x))` before `)\\n` -> `foo(x)`; `return x;` before `;\\n` -> `return x`. The longest
    overlap made only of brackets/quotes/`;,` is tried first, then shorter ones.
    """
    if not middle or middle.endswith("\n"):
        return middle
    rest_of_line = _first_line_of(suffix)
    longest = 0
    while longest < len(rest_of_line) and rest_of_line[longest] in TRIMMABLE:
        longest += 1
    for size in range(min(longest, len(middle)), 0, -1):
        overlap = rest_of_line[:size]
        if not middle.endswith(overlap):
            continue
        whole_rest = overlap == rest_of_line.rstrip()
        if _closer_is_duplicate(middle, overlap, prefix) or (whole_rest and not set(overlap) - set(PUNCTUATION)):
            return middle[: len(middle) - size]
    return middle


def trim_suffix_overlap(middle: str, suffix: str, prefix: str | None = None) -> str:
    """Remove text at the end of the middle that repeats the start of the suffix.

    `prefix` (optional) lets the middle's first line be compared as a whole document line.
    """
    return _trim_cursor_line(_trim_repeated_lines(middle, suffix, prefix), suffix, prefix)


def fix_indentation(middle: str, prefix: str) -> str:
    """Don't indent twice: the prefix already ends with the line's indentation, so every copy of
    it at the middle's start is a repeat (8 spaces after a 4-space indentation: both go at once).

    Only the first line is changed; later lines start at column 0 of the document, so their
    indentation (and with it the relative indentation) is kept as generated.
    """
    indent = _last_line(prefix)
    if not indent or indent.strip():
        return middle
    while middle.startswith(indent):
        middle = middle[len(indent):]
    return middle


def _starts_new_line(suffix: str) -> bool:
    return suffix.lstrip(" \t").startswith(("\n", "\r\n"))


def postprocess(middle: str, prefix: str, suffix: str, single_line: bool) -> str:
    """The text to insert: first line (single-line mode), indentation fixed, overlap trimmed;
    the rules run again until the text stops changing, so the result is a fixed point."""
    for _ in range(MAX_PASSES):
        cleaned = _clean(middle, prefix, suffix, single_line)
        if cleaned == middle:
            break
        middle = cleaned
    return middle


def _clean(middle: str, prefix: str, suffix: str, single_line: bool) -> str:
    if single_line:
        middle = first_line(middle)
    middle = fix_indentation(middle, prefix)
    middle = trim_suffix_overlap(middle, suffix, prefix)
    if _starts_new_line(suffix):
        # the suffix ends the line itself: trailing spaces or blank lines would be junk
        middle = middle.rstrip()
    return middle if middle.strip() else ""
