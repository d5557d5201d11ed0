"""Score completions, per suite, as each benchmark's own paper does.

  humaneval-*   pass@1: prefix + completion + suffix + tests run in the sandbox
  safim         SAFIM's post-processing, then execution (block, control) or AST match (api)
  santacoder    exact match of the first non-blank line
  repo          exact match, edit similarity, and whether the file still parses
  structure     exact match and edit similarity (the suite is about tokens per forward)

Every scorer returns a flat dict: `scored_text` (what was scored) plus its metrics, booleans
for pass/fail metrics so that their mean is the rate.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from bench.cases import FimCase
from bench.metrics import edit_similarity, exact_match, first_line, first_line_exact_match, parses

Scores = dict[str, Any]


def fit_to_hole(case: FimCase, completion: str) -> str:
    """End the completion with a line break when the hole is whole lines (the suffix starts a
    new line): the worker trims trailing line breaks, the editor puts the cursor there."""
    if case.middle.endswith("\n") and completion.strip() and not completion.endswith("\n"):
        return completion + "\n"
    return completion


def _text_metrics(case: FimCase, text: str) -> Scores:
    return {"exact_match": exact_match(text, case.middle), "edit_similarity": round(edit_similarity(text, case.middle), 4)}


def score_humaneval(case: FimCase, completion: str) -> Scores:
    from bench.sandbox import score_humaneval as run

    text = fit_to_hole(case, completion)
    result = run(case, text)
    return {"scored_text": text, "pass@1": result.passed, "status": result.status,
            "detail": result.detail[-300:], **_text_metrics(case, text)}


def score_safim(case: FimCase, completion: str) -> Scores:
    from bench import safim

    text = safim.postprocess(case, completion)
    return {"scored_text": text, **{("pass@1" if k == "passed" else k): v for k, v in safim.score(case, text).items()},
            **_text_metrics(case, text)}


def score_santacoder(case: FimCase, completion: str) -> Scores:
    return {"scored_text": completion, "first_line_em": first_line_exact_match(completion, case.middle),
            "edit_similarity": round(edit_similarity(first_line(completion), first_line(case.middle)), 4)}


def score_repo(case: FimCase, completion: str) -> Scores:
    text = fit_to_hole(case, completion)
    return {"scored_text": text, **_text_metrics(case, text), "parses": parses(case.prefix + text + case.suffix)}


def score_structure(case: FimCase, completion: str) -> Scores:
    text = fit_to_hole(case, completion)
    return {"scored_text": text, **_text_metrics(case, text)}


SCORERS: dict[str, Callable[[FimCase, str], Scores]] = {
    "humaneval-single": score_humaneval,
    "humaneval-multi": score_humaneval,
    "humaneval-released": score_humaneval,
    "safim": score_safim,
    "santacoder": score_santacoder,
    "repo": score_repo,
    "structure": score_structure,
}


def score_many(suite: str, cases: Sequence[FimCase], completions: Sequence[str], workers: int = 0) -> list[Scores]:
    """Scores of completions[k] for cases[k], in order; sandboxed runs go in parallel threads
    (each only waits on its subprocess)."""
    if len(cases) != len(completions):
        raise ValueError("one completion per case")
    scorer = SCORERS[suite]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(scorer, cases, completions))
