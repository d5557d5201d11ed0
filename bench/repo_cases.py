"""FIM cases cut from real Python files: the cursor sits somewhere in a repository.

Kinds of middle:
  line     one whole non-blank line, with its line break (like HumanEval single-line)
  block    2 to 6 consecutive lines, first and last non-blank
  ast      the source text of a random statement or expression node
  midline  the rest of a line after a random character (line break excluded)
  pause    the rest of a line after a pause point: after a space, bracket or operator, never
           inside a word or the indentation (fim_server.train.data.pause_points; not in KINDS,
           the repository suite's default mix, so its cases stay as they were)

Sampling is a pure function of (file contents, seed, n, kinds): files are sorted and all
choices come from one random.Random(seed), so the same inputs give identical cases.
Every case satisfies prefix + middle + suffix == the file's text.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from bench.cases import FimCase
from fim_server.train.data import pause_points

KINDS = ("line", "block", "ast", "midline")
MAX_FILE_BYTES = 1_000_000
MAX_AST_CHARS = 1500  # longer nodes (whole classes) make poor completion targets
TRIES_PER_CASE = 20  # give up on a case after this many unusable draws, on average
# Line breaks as the Python tokenizer counts them, so AST line numbers agree with ours.
LINE_BREAK = re.compile(r"\r\n|\r|\n")

Span = tuple[int, int]  # [start, end) character offsets of the middle


@dataclass
class SourceFile:
    name: str  # path relative to the sampled root, with '/' separators
    text: str
    line_starts: list[int] = field(init=False)
    non_blank: list[int] = field(init=False)  # indices of lines with any non-space text
    _ast_spans: Optional[list[Span]] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.line_starts = [0] + [m.end() for m in LINE_BREAK.finditer(self.text)]
        self.non_blank = [k for k in range(len(self.line_starts)) if self.line(k).strip()]

    def line_end(self, k: int) -> int:
        """Offset just past line k, its line break included."""
        return self.line_starts[k + 1] if k + 1 < len(self.line_starts) else len(self.text)

    def line(self, k: int) -> str:
        return self.text[self.line_starts[k] : self.line_end(k)]

    def offset(self, lineno: int, col_offset: int) -> int:
        """Character offset of an AST position (1-based line, UTF-8 byte column)."""
        line_bytes = self.line(lineno - 1).encode("utf-8")
        return self.line_starts[lineno - 1] + len(line_bytes[:col_offset].decode("utf-8"))

    def ast_spans(self) -> list[Span]:
        """Spans of all statement and expression nodes short enough to be a middle."""
        if self._ast_spans is None:
            # Parsed again here rather than kept from loading: trees of a whole repository
            # would take far more memory than its text.
            try:
                nodes = _nodes(ast.parse(self.text))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                nodes = []  # built directly by a caller from text that does not parse
            spans = (self._node_span(node) for node in nodes)
            self._ast_spans = [s for s in spans if s is not None and 0 < s[1] - s[0] <= MAX_AST_CHARS]
        return self._ast_spans

    def _node_span(self, node: ast.AST) -> Optional[Span]:
        if getattr(node, "end_lineno", None) is None:
            return None
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Statement and expression nodes in a fixed order, not descending into f-strings
    (before Python 3.12 the positions of nodes inside f-strings are unreliable)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.stmt, ast.expr)):
            found.append(node)
        if not isinstance(node, ast.JoinedStr):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return found


def python_files(root: str | Path) -> list[Path]:
    """*.py files under root, sorted, skipping hidden directories (.git, .venv, ...)."""
    root = Path(root)
    found = [p for p in root.rglob("*.py") if p.is_file() and not _hidden(p.relative_to(root))]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts[:-1])


def load_source(path: Path, name: str) -> Optional[SourceFile]:
    """The parsed file, or None if it is huge, not UTF-8, does not parse or is blank."""
    if path.stat().st_size > MAX_FILE_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8")  # bytes, so line breaks stay as written
        ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    source = SourceFile(name, text)
    return source if source.non_blank else None


def _sample_line(src: SourceFile, rng: random.Random) -> Optional[Span]:
    k = rng.choice(src.non_blank)
    return src.line_starts[k], src.line_end(k)


def _sample_block(src: SourceFile, rng: random.Random) -> Optional[Span]:
    first = rng.choice(src.non_blank)
    last = min(first + rng.randint(2, 6) - 1, len(src.line_starts) - 1)
    while last > first and not src.line(last).strip():
        last -= 1  # a block ends on code, not on blank lines
    if last == first:
        return None
    return src.line_starts[first], src.line_end(last)


def _sample_ast(src: SourceFile, rng: random.Random) -> Optional[Span]:
    spans = src.ast_spans()
    return rng.choice(spans) if spans else None


def _random_line(src: SourceFile, rng: random.Random) -> tuple[int, str]:
    """A non-blank line: (offset of its start, its text without the line break)."""
    k = rng.choice(src.non_blank)
    return src.line_starts[k], LINE_BREAK.sub("", src.line(k))


def _sample_midline(src: SourceFile, rng: random.Random) -> Optional[Span]:
    start, content = _random_line(src, rng)
    indent = len(content) - len(content.lstrip())
    code_end = len(content.rstrip())
    if code_end - indent < 2:
        return None
    # At least one character of code stays before the cursor and one goes in the middle.
    cut = rng.randint(indent + 1, code_end - 1)
    return start + cut, start + len(content)


def _sample_pause(src: SourceFile, rng: random.Random) -> Optional[Span]:
    start, content = _random_line(src, rng)
    code_end = start + len(content.rstrip())
    # a cursor with code before it on the line, and code after it
    points = [a for a in pause_points(src.text, start, code_end) if src.text[start:a].strip()]
    if not points:
        return None
    return rng.choice(points), start + len(content)


SAMPLERS: dict[str, Callable[[SourceFile, random.Random], Optional[Span]]] = {
    "line": _sample_line,
    "block": _sample_block,
    "ast": _sample_ast,
    "midline": _sample_midline,
    "pause": _sample_pause,
}


def _make_case(src: SourceFile, span: Span, kind: str, suite: str) -> FimCase:
    start, end = span
    return FimCase(
        id=f"{src.name}:{kind}:{start}-{end}",
        prefix=src.text[:start],
        middle=src.text[start:end],
        suffix=src.text[end:],
        test=None,
        entry_point=None,
        suite=suite,
        kind=kind,
    )


def sample_cases(
    sources: list[SourceFile], n: int, seed: int, kinds: Iterable[str] = KINDS, suite: str = "repo"
) -> list[FimCase]:
    """n distinct cases (fewer if the files run out of distinct spans)."""
    kinds = tuple(kinds)
    unknown = set(kinds) - set(SAMPLERS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; known: {tuple(SAMPLERS)}")
    # Sorted so that the caller's file order cannot change the cases; blank files have
    # nothing to cut.
    sources = sorted((src for src in sources if src.non_blank), key=lambda src: src.name)
    rng = random.Random(seed)
    cases: list[FimCase] = []
    seen: set[tuple[str, Span]] = set()  # one span is one problem, whichever kind found it
    for _ in range(n * TRIES_PER_CASE):
        if len(cases) == n or not sources:
            break
        kind = rng.choice(kinds)
        src = rng.choice(sources)
        span = SAMPLERS[kind](src, rng)
        if span is None or (src.name, span) in seen:
            continue
        seen.add((src.name, span))
        cases.append(_make_case(src, span, kind, suite))
    return cases


def load_sources(root: str | Path) -> list[SourceFile]:
    """Every usable Python file under root, in sorted order."""
    root = Path(root)
    loaded = (load_source(path, path.relative_to(root).as_posix()) for path in python_files(root))
    return [src for src in loaded if src is not None]


def sample_repo_cases(
    root: str | Path, n: int, seed: int, kinds: Iterable[str] = KINDS, suite: str = "repo"
) -> list[FimCase]:
    """Sample n FIM cases from the Python files under root; same inputs, same cases."""
    return sample_cases(load_sources(root), n, seed, kinds, suite)
