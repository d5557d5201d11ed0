"""The one case type shared by every benchmark suite."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class FimCase:
    """A fill-in-the-middle problem: the model sees prefix and suffix and must write middle.

    `test` and `entry_point` are set only for executable suites (HumanEval); repository
    cases have no tests and are scored with text metrics instead. `meta` holds what another
    suite's scorer needs (SAFIM: the evaluation program and its unit tests).
    """

    id: str
    prefix: str
    suffix: str
    middle: str
    test: str | None
    entry_point: str | None
    suite: str
    kind: str
    meta: Optional[Mapping[str, Any]] = field(default=None, compare=False)
