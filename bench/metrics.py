"""Text metrics for completions that have no tests (repository cases) or alongside tests."""

from __future__ import annotations

import ast
from os.path import commonprefix  # works on any strings, not only paths


def normalize(text: str) -> str:
    """Drop trailing whitespace on each line and blank lines around the text.

    Leading indentation is kept: in Python it is part of the meaning.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1)."""
    # A shared prefix and suffix never changes the distance, and trimming it makes the
    # quadratic part small for the typical near-miss completion.
    shared = len(commonprefix([a, b]))
    a, b = a[shared:], b[shared:]
    shared = len(commonprefix([a[::-1], b[::-1]]))
    a, b = a[: len(a) - shared], b[: len(b) - shared]
    if len(a) < len(b):
        a, b = b, a  # keep the row (over b) the shorter one
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, reference: str) -> float:
    """1 - Levenshtein / max length, on normalized text; 1.0 is identical, 0.0 shares nothing."""
    a, b = normalize(prediction), normalize(reference)
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(a, b) / longest


def first_line(text: str) -> str:
    """First non-blank line, stripped."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def first_line_exact_match(prediction: str, reference: str) -> bool:
    """Compare only the first non-blank line, as Qwen2.5-Coder scores SantaCoder-FIM.

    Lenient on purpose: a model that gets the line right and then keeps writing still counts.
    """
    return first_line(prediction) == first_line(reference)


def parses(source: str) -> bool:
    """Whether `source` is syntactically valid Python."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: null bytes; RecursionError/MemoryError: absurdly nested input.
        return False
    return True
