"""Counts and latency the server reports through the `fim/stats` request.

Latency is keystroke to reply as the server sees it: from the request's arrival to the
answer, debounce and worker time included, over requests that were answered (not
cancelled); nearest-rank percentiles over the most recent LATENCY_WINDOW answers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from fim_server.measure import percentile

LATENCY_WINDOW = 2048

COUNTERS = (
    "requests",      # completion requests received (inline and classic)
    "shown",         # answered with a non-empty item
    "empty",         # answered with nothing (model's best empty, disabled, no worker, bad input)
    "accepted",      # items the user accepted (the item's fim.accept command ran)
    "cancelled",     # superseded by a newer request for the document, or $/cancelRequest
    "reused",        # answered from the completion on screen (typed ahead), no worker call
    "computed",      # answered by the worker
    "worker_errors",  # the worker answered with an error
    "unavailable",   # no worker answered
    "bad_input",     # unknown document or binary content
    "disabled",      # the document's language is disabled in the settings
)


class Telemetry:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.started = time.monotonic()
        self.last_worker: dict[str, Any] | None = None     # timing of the latest worker answer

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def answered(self, started: float, shown: bool) -> None:
        """One request answered; `started` is its time.monotonic() at arrival."""
        self.latencies.append((time.monotonic() - started) * 1000)
        self.count("shown" if shown else "empty")

    def worker_answered(self, uri: str, stats: dict[str, Any]) -> None:
        """The worker's own figures for its latest answer: time inside the worker (queue and
        compute) and in the engine, so a client can tell model time from transport time."""
        self.last_worker = {"uri": uri, "worker_ms": stats.get("latency_ms"),
                            "engine_ms": stats.get("engine_latency_ms"), "nfe": stats.get("nfe"),
                            "reused": stats.get("reused")}

    def snapshot(self) -> dict[str, Any]:
        latencies = list(self.latencies)
        shown = self.counts["shown"]
        return {
            **self.counts,
            "acceptance_rate": round(self.counts["accepted"] / shown, 4) if shown else None,
            "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                           "window": len(latencies)},
            "last_worker": self.last_worker,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
