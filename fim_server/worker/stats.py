"""Counters and latency figures the worker reports in answer to a health message."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Optional

from fim_server.measure import percentile

LATENCY_WINDOW = 2048      # percentiles over the most recent answers, not since start


class WorkerStats:
    COUNTERS = ("served", "reused", "cancelled", "failed", "busy", "deadline_dropped",
                "deadline_stopped", "bad_request")

    def __init__(self, info: dict[str, Any]):
        self.info = dict(info)                      # model, device, engine, warmup_ms, ...
        self.started = time.monotonic()
        self.counts = Counter({name: 0 for name in self.COUNTERS})
        self.batch_sizes: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.nfe = 0                                # over computed answers only
        self.tokens = 0
        self.computed = 0
        self.prompt_tokens = 0                      # prefix + suffix tokens of computed answers
        self.kv_reused_tokens = 0                   # of which the KV came from the document's last request
        self.kv_reused_requests = 0
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes[size] += 1

    def served(self, latency_ms: float, engine_stats: Optional[dict[str, Any]]) -> None:
        """One completion answered; engine_stats is None when it was served by reuse."""
        with self._lock:
            self.counts["served"] += 1
            self.latencies.append(latency_ms)
            if engine_stats is None:
                self.counts["reused"] += 1
                return
            self.computed += 1
            self.nfe += int(engine_stats.get("nfe", 0))
            self.tokens += int(engine_stats.get("tokens", 0))
            self.prompt_tokens += int(engine_stats.get("prompt_tokens", 0))
            reused = int(engine_stats.get("reused_tokens", 0))
            self.kv_reused_tokens += reused
            self.kv_reused_requests += reused > 0

    def snapshot(self, queued: int, running: int) -> dict[str, Any]:
        with self._lock:
            latencies = list(self.latencies)
            return {
                **self.info,
                **self.counts,
                "queue_depth": queued,
                "running": running,
                "computed": self.computed,
                "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                               "window": len(latencies)},
                # NFE and tokens per forward are over computed answers: reused ones ran no model
                "mean_nfe": round(self.nfe / self.computed, 3) if self.computed else None,
                "tokens_per_forward": round(self.tokens / self.nfe, 4) if self.nfe else None,
                # cross-request KV reuse (typed a few characters: the shared leading tokens' KV is kept)
                "kv_reuse": {"requests": self.kv_reused_requests, "tokens": self.kv_reused_tokens,
                             "prompt_tokens": self.prompt_tokens,
                             "share": round(self.kv_reused_tokens / self.prompt_tokens, 4) if self.prompt_tokens else None},
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "uptime_s": round(time.monotonic() - self.started, 3),
            }
