"""Cases for the `structure` suite: middles of code lines vs comment and docstring lines cut from
the same files, to measure whether parallel decoding commits more tokens per forward on
structured text (code) than on natural language (comments, docstrings).

Every middle is 1 to MAX_LINES whole consecutive lines of one role:
  code       lines with code on them (not comment-only, not inside a multi-line string)
  comment    comment-only lines (`# ...`)
  docstring  lines strictly inside a module, class or function docstring
Sampling is a pure function of (file contents, seed, n): the kinds take turns, files are
sorted, and all choices come from one random.Random(seed).
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from pathlib import Path

from bench.cases import FimCase
from bench.repo_cases import SourceFile, load_sources

KINDS = ("code", "comment", "docstring")
MAX_LINES = 3
TRIES_PER_CASE = 20
Run = list[int]  # consecutive 0-based line indices of one role


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                # 1-based first..last; strictly inside = 0-based first..last-2
                lines.update(range(first.lineno, first.end_lineno - 1))
    return lines


def _roles(src: SourceFile) -> dict[str, set[int]]:
    """0-based line indices of each role in one file."""
    comment, in_string = set(), set()
    tokens = tokenize.generate_tokens(io.StringIO(src.text).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT and tok.line.strip().startswith("#"):
            comment.add(tok.start[0] - 1)
        elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_string.update(range(tok.start[0] - 1, tok.end[0]))
    docstring = {k for k in _docstring_lines(ast.parse(src.text)) if src.line(k).strip()}
    code = {k for k in src.non_blank if k not in comment and k not in in_string}
    return {"code": code, "comment": comment, "docstring": docstring}


def _runs(lines: set[int]) -> list[Run]:
    runs: list[Run] = []
    for k in sorted(lines):
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def file_runs(src: SourceFile) -> dict[str, list[Run]]:
    try:
        return {kind: _runs(lines) for kind, lines in _roles(src).items()}
    except (SyntaxError, tokenize.TokenError, IndentationError, ValueError, RecursionError):
        return {kind: [] for kind in KINDS}


def sample_structure_cases(sources: list[SourceFile], n: int, seed: int, suite: str = "structure") -> list[FimCase]:
    """n cases (fewer if the files run out), the kinds in turn: code, comment, docstring, ..."""
    sources = sorted(sources, key=lambda s: s.name)
    runs = {s.name: file_runs(s) for s in sources}
    having = {kind: [s for s in sources if runs[s.name][kind]] for kind in KINDS}
    rng = random.Random(seed)
    cases: list[FimCase] = []
    seen: set[tuple[str, int, int]] = set()
    kinds = [kind for kind in KINDS if having[kind]]
    for _ in range(n * TRIES_PER_CASE):
        if len(cases) == n or not kinds:
            break
        kind = kinds[len(cases) % len(kinds)]
        src = rng.choice(having[kind])
        run = rng.choice(runs[src.name][kind])
        count = rng.randint(1, min(MAX_LINES, len(run)))
        first = run[rng.randint(0, len(run) - count)]
        start, end = src.line_starts[first], src.line_end(first + count - 1)
        if (src.name, start, end) in seen:
            continue
        seen.add((src.name, start, end))
        cases.append(FimCase(id=f"{src.name}:{kind}:{start}-{end}", prefix=src.text[:start],
                             middle=src.text[start:end], suffix=src.text[end:], test=None, entry_point=None,
                             suite=suite, kind=kind))
    return cases


def sample_structure_repo(root: str | Path, n: int, seed: int) -> list[FimCase]:
    return sample_structure_cases(load_sources(root), n, seed)
