"""SAFIM (Gong et al. 2024), Python subset: read from a path, post-processed and scored as the
SAFIM repository does, so pass@1 is comparable to published numbers.

Files: block_completion / control_completion / api_completion .jsonl.gz, records with fields
lang, prompt, eval_prompt, ground_truth, unit_tests, task_id. The FIM prompt is the record's
`prompt` split at the placeholder comment (PSM "infilling" mode).

Post-processing (SAFIM's `--post_processors` for infilling):
  control  the first non-blank line (truncate_control)
  api      up to the parenthesis that closes the call (truncate_api_call)
  block    drop trailing lines until the filled program parses and the completion is exactly
           a block at the hole (truncate_line_until_block). SAFIM compares tree-sitter node
           traces; here the same test is done with Python's own `ast` (see `is_block_at_hole`).
Scoring (evaluate.py): a completion equal to the ground truth passes; block and control run
every unit test (stdin -> stdout, compared as ExecEval does) in the sandbox and pass when all
do; api compares ASTs (`syntax_match`). Differences from the paper: CPython instead of PyPy 3
(slower, hence a generous time limit) and the sandbox instead of ExecEval's container.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from bench.cases import FimCase
from bench.sandbox import ExecResult, run_program

log = logging.getLogger(__name__)

SUITE = "safim"
KINDS = ("block", "control", "api")
PLACEHOLDER = "# TODO: Your code here"
HOLE = "{{completion}}"
TEST_TIMEOUT_S = 5.0
_YES_NO = {"yes", "no", "true", "false"}
_PRECISION = Fraction(1, 10**12)


# ---------------------------------------------------------------- loading


def _kind_of(path: Path) -> str:
    for kind in KINDS:
        if path.name.startswith(kind):
            return kind
    raise ValueError(f"{path}: cannot tell the SAFIM task from the file name (want {', '.join(KINDS)}_completion...)")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.glob("*.jsonl*") if p.name.split("_")[0] in KINDS)
        if found:
            return found
    raise ValueError(f"{path}: no SAFIM files (block_completion.jsonl.gz, ...) there")


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        log.warning("%s line %d: not JSON (%s); skipped", path, n, exc)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON lines ({exc})") from None
    return rows


def _case(row: dict, kind: str) -> Optional[FimCase]:
    try:
        parts = row["prompt"].split(PLACEHOLDER)
        if len(parts) != 2 or row["eval_prompt"].count(HOLE) != 1:
            return None
        return FimCase(
            id=f"{kind}/{row['task_id']}",      # api task ids reuse block ids: the kind keeps them apart
            prefix=parts[0], suffix=parts[1], middle=row["ground_truth"], test=None, entry_point=None,
            suite=SUITE, kind=kind,
            meta={"eval_prompt": row["eval_prompt"], "unit_tests": list(row.get("unit_tests") or []),
                  "ground_truth": row["ground_truth"]},
        )
    except (KeyError, TypeError, AttributeError):
        return None


def load_safim(path: str | Path, lang: str = "python") -> list[FimCase]:
    """The `lang` records of every SAFIM file at `path` (a file or a directory), in file order."""
    cases, skipped = [], 0
    for file in _files(Path(path)):
        kind = _kind_of(file)
        for row in _read_jsonl(file):
            if row.get("lang") != lang:
                continue
            case = _case(row, kind)
            skipped += case is None
            if case is not None:
                cases.append(case)
    if skipped:
        log.warning("SAFIM: %d malformed %s records skipped", skipped, lang)
    return cases


# ---------------------------------------------------------------- post-processing


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def truncate_api_call(text: str) -> str:
    """Up to and including the ')' that brings the bracket depth back to zero (or below)."""
    depth = 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth <= 0:
                return text[: i + 1]
    return text


def _statement_lists(tree: ast.AST):
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield value


def _blank_hole(tree: ast.AST, start: tuple[int, int], last: int) -> bool:
    """Replace the run of statements that start at or after `start` (line, byte column) and
    on or before line `last` by one `pass`. False when they are not one contiguous run in a
    single statement list."""
    for body in _statement_lists(tree):
        inside = [k for k, stmt in enumerate(body) if start <= (stmt.lineno, stmt.col_offset) and stmt.lineno <= last]
        if inside:
            if inside != list(range(inside[0], inside[-1] + 1)):
                return False
            body[inside[0]: inside[-1] + 1] = [ast.Pass()]
            return True
    return False


def is_block_at_hole(eval_prompt: str, completion: str) -> bool:
    """Whether filling the hole with `completion` parses and changes nothing but the hole: the
    program's AST, with the completion's statements replaced by one `pass`, equals the AST of
    the program with `pass` in the hole."""
    before, after = eval_prompt.split(HOLE)
    try:
        filled = ast.parse(before + completion + after)
        baseline = ast.parse(before + "pass" + after)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    # The hole may follow a compound header on its line (`if x: {{completion}}`).
    first = before.count("\n") + 1
    column = len(before.rsplit("\n", 1)[-1].encode("utf-8"))
    last = first + completion.rstrip().count("\n")
    if not completion.strip() or not _blank_hole(filled, (first, column), last):
        return False
    return ast.dump(filled) == ast.dump(baseline)


def truncate_block(eval_prompt: str, completion: str) -> str:
    lines = completion.splitlines(keepends=True)
    while lines and not is_block_at_hole(eval_prompt, "".join(lines)):
        lines.pop()
    return "".join(lines)


def postprocess(case: FimCase, completion: str) -> str:
    if case.kind == "control":
        return first_line(completion)
    if case.kind == "api":
        return truncate_api_call(completion)
    return truncate_block(case.meta["eval_prompt"], completion)


# ---------------------------------------------------------------- scoring


def _number(token: str) -> Optional[Fraction]:
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def outputs_match(expected: str, got: str) -> bool:
    """ExecEval's rule: equal line by line after stripping; otherwise token by token, numbers
    within 1e-12, yes/no/true/false in any case."""
    lines_a, lines_b = expected.strip().split("\n"), got.strip().split("\n")
    if len(lines_a) == len(lines_b) and all(a.strip() == b.strip() for a, b in zip(lines_a, lines_b)):
        return True
    tokens_a, tokens_b = expected.split(), got.split()
    if len(tokens_a) != len(tokens_b):
        return False
    for a, b in zip(tokens_a, tokens_b):
        num_a, num_b = _number(a), _number(b)
        if num_a is not None and num_b is not None:
            if abs(num_a - num_b) > _PRECISION:
                return False
            continue
        a = a.lower() if a.lower() in _YES_NO else a
        b = b.lower() if b.lower() in _YES_NO else b
        if a != b:
            return False
    return True


def run_unit_tests(program: str, unit_tests: list[dict], timeout_s: float = TEST_TIMEOUT_S) -> ExecResult:
    """Run `program` once per unit test; stop at the first that fails."""
    for test in unit_tests:
        result = run_program(program, timeout_s=timeout_s, stdin=test.get("input", ""), capture_output=True)
        if not result.passed:
            return result
        if not any(outputs_match(want, result.output) for want in test.get("output", [])):
            return ExecResult(False, "failed", "wrong answer")
    return ExecResult(True, "passed", "")


def _call_params(call: ast.Call) -> tuple:
    return [ast.dump(arg) for arg in call.args], {kw.arg: ast.dump(kw.value) for kw in call.keywords}


def syntax_match(completion: str, truth: str) -> bool:
    """SAFIM's API-call match: whitespace removed; when both parse as calls, equal positional
    and keyword arguments (SAFIM compares the arguments only, not the callee); otherwise equal
    text."""
    a, b = re.sub(r"\s+", "", completion), re.sub(r"\s+", "", truth)
    try:
        tree_a, tree_b = ast.parse(a, mode="eval"), ast.parse(b, mode="eval")
        if isinstance(tree_a.body, ast.Call) and isinstance(tree_b.body, ast.Call):
            return _call_params(tree_a.body) == _call_params(tree_b.body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    return a == b


def score(case: FimCase, completion: str) -> dict[str, Any]:
    """{"passed", "status", "detail"} for one post-processed completion."""
    meta = case.meta
    if not meta["unit_tests"]:
        matched = syntax_match(completion, meta["ground_truth"])
        return {"passed": matched, "status": "passed" if matched else "failed", "detail": "AST match"}
    if completion == meta["ground_truth"]:
        return {"passed": True, "status": "passed", "detail": "equals the ground truth"}
    result = run_unit_tests(meta["eval_prompt"].replace(HOLE, completion), meta["unit_tests"])
    return {"passed": result.passed, "status": result.status, "detail": result.detail[-300:]}
