"""The request template the AR and speculative engines share: set every request up as a row,
decode all rows together, then turn each row into a result. Subclasses give _start, _generate
and _result; the timing split (encode = set-up per request, decode = the shared loop) is here."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Optional

import torch

from fim_server.wire.options import DecodeConfig
from .types import InfillRequest, InfillResult, ShouldStop

WARMUP_REQUEST = InfillRequest("def f(x):\n    return ", "\n")


class RowEngine(ABC):
    kind = ""

    def warmup(self) -> float:
        """One tiny request, so the first user request pays no first-use cost; seconds taken."""
        t0 = time.perf_counter()
        self.infill([WARMUP_REQUEST], DecodeConfig(engine=self.kind, max_tokens=4))
        return time.perf_counter() - t0

    @torch.inference_mode()
    def infill(self, requests: list[InfillRequest], config: DecodeConfig,
               should_stop: Optional[ShouldStop] = None) -> list[InfillResult]:
        if not requests:
            return []
        t0 = time.perf_counter()
        rows = [self._start(r, config) for r in requests]
        t1 = time.perf_counter()
        self._generate(rows, config, should_stop)
        decode_ms = (time.perf_counter() - t1) * 1000
        encode_ms = (t1 - t0) * 1000 / len(rows)
        return [self._result(row, req, config, encode_ms, decode_ms, t0) for row, req in zip(rows, requests)]

    @abstractmethod
    def _start(self, req: InfillRequest, config: DecodeConfig) -> Any:
        """The request's row: prompt laid out, caches looked up."""

    @abstractmethod
    def _generate(self, rows: list, config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        """Decode every row together until each is done (or should_stop says so)."""

    @abstractmethod
    def _result(self, row: Any, req: InfillRequest, config: DecodeConfig, encode_ms: float,
                decode_ms: float, t0: float) -> InfillResult:
        """The row's text (post-processed) and stats."""
