"""Per document: the newest request wins, after a debounce that follows the typing rhythm.

LatestWins runs one task per key; starting a new one cancels the older (whose caller gets
`SUPERSEDED`). Cancelling the task that awaits `run` (`$/cancelRequest`) cancels the work
too. Cancellation reaches the worker because the work awaits WorkerClient.infill, which
sends a cancel message when it is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document replaced this one."""


class LatestWins:
    def __init__(self) -> None:
        self._current: dict[str, asyncio.Task] = {}
        self._superseded: set[asyncio.Task] = set()

    def cancel(self, key: str) -> bool:
        """Cancel the running task for `key` (document closed); True if there was one."""
        task = self._current.pop(key, None)
        if task is None or task.done():
            return False
        self._superseded.add(task)
        task.cancel()
        return True

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run work() as the current task of `key`; raises Superseded when replaced.
        Call it before any other await so that arrival order decides who is newest."""
        self.cancel(key)
        task = asyncio.ensure_future(work())
        self._current[key] = task
        try:
            return await task
        except asyncio.CancelledError:
            if task in self._superseded and not _cancelling():
                raise Superseded() from None
            raise
        finally:
            self._superseded.discard(task)
            if self._current.get(key) is task:
                del self._current[key]

    def running(self) -> int:
        return sum(not t.done() for t in self._current.values())


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (Python 3.11+; else assume not)."""
    task = asyncio.current_task()
    return bool(task is not None and getattr(task, "cancelling", lambda: 0)())


class Debouncer:
    """How long to wait for the next keystroke before asking the worker.

    Fixed at `base_ms` unless adaptive: then, while the user types in a burst (keystrokes
    under a second apart), the wait stretches to 1.25x their recent median gap when that is
    at most 4x the base, so that mid-word keystrokes do not each start a completion that the
    next one cancels. Slower typing keeps the base wait: each pause gets its completion.
    """

    BURST_GAP_S = 1.0         # gaps longer than this are pauses, not typing
    HISTORY = 6

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._last: dict[str, float] = {}
        self._gaps: dict[str, deque[float]] = {}

    def delay_s(self, key: str, base_ms: int, adaptive: bool) -> float:
        now = self.clock()
        last = self._last.get(key)
        self._last[key] = now
        gaps = self._gaps.setdefault(key, deque(maxlen=self.HISTORY))
        if last is not None and now - last < self.BURST_GAP_S:
            gaps.append(now - last)
        base = base_ms / 1000
        if not adaptive or not gaps or base == 0:
            return base
        median = sorted(gaps)[len(gaps) // 2]
        stretched = 1.25 * median
        return stretched if base < stretched <= 4 * base else base

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
        self._gaps.pop(key, None)
