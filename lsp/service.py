"""One completion request, start to end: the domain logic behind the LSP handlers.

    request -> enabled? -> latest wins (per document) -> cursor context (thread)
            -> typed-ahead reuse | debounce -> worker -> finish -> Completion | None

Never raises for bad input: an unknown document, binary text, a position past the end,
a missing worker or a worker error each give None (nothing shown) and a count.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

from fim_server.wire.client import RequestFailed
from fim_server.wire.typed_ahead import TypedAhead

from .completion import finish
from .cursor import CursorContext, cursor_context
from .debounce import Debouncer, LatestWins, Superseded
from .settings import Settings
from .telemetry import Telemetry
from .worker_link import WorkerLink

log = logging.getLogger(__name__)

SINGLE_LINE_TOKENS = 32      # cap on a single-line middle (engine.max_tokens caps both kinds)


@dataclass(frozen=True)
class Request:
    uri: str
    language_id: Optional[str]
    source: Optional[str]      # the document's text when the request arrived; None: unknown document
    line: int
    character: int             # in the client's position units
    encoding: str              # utf-16 | utf-8 | utf-32
    invoked: bool = False      # the user asked explicitly: no debounce


@dataclass(frozen=True)
class Completion:
    id: str
    text: str                  # insert at the cursor
    ctx: CursorContext
    reused: bool               # from the completion on screen, not from the worker


class CompletionService:
    def __init__(self, link: WorkerLink, telemetry: Telemetry, settings: Callable[[], Settings],
                 log_message: Callable[[str], None]):
        self.link = link
        self.telemetry = telemetry
        self.settings = settings
        self._log = log_message
        self.latest = LatestWins()
        self.debouncer = Debouncer()
        self.typed = TypedAhead(capacity=256)      # the completion on screen, per document
        self._ids = itertools.count(1)
        self._logged: set[str] = set()      # one log line per kind of bad input and document

    async def complete(self, request: Request) -> Optional[Completion]:
        started = time.monotonic()
        self.telemetry.count("requests")
        settings = self.settings()
        if not settings.enabled_for(request.language_id):
            return self._answer(started, None, "disabled")
        if request.source is None:
            self._log_once(f"fim: no completion for {request.uri}: the document is not open")
            return self._answer(started, None, "bad_input")
        delay_s = 0.0 if request.invoked else self.debouncer.delay_s(
            request.uri, settings.debounce_ms, settings.adaptive_debounce)
        try:
            done = await self.latest.run(request.uri, lambda: self._work(request, settings, delay_s))
        except Superseded:
            self.telemetry.count("cancelled")
            return None
        except asyncio.CancelledError:                  # $/cancelRequest (or shutdown)
            self.telemetry.count("cancelled")
            raise
        except Exception as exc:                        # a bug must cost one completion, not the server
            log.exception("completion failed for %s", request.uri)
            self._log_once(f"fim: internal error while completing: {type(exc).__name__}: {exc}")
            done = None
        self.telemetry.answered(started, shown=done is not None)
        return done

    def accepted(self, uri: Optional[str]) -> None:
        self.telemetry.count("accepted")
        if uri:
            self.typed.forget(uri)          # the text changed under the shown completion

    def closed(self, uri: str) -> None:
        self.latest.cancel(uri)
        self.typed.forget(uri)
        self.debouncer.forget(uri)

    # ---------------------------------------------------------------- one request

    async def _work(self, request: Request, settings: Settings, delay_s: float) -> Optional[Completion]:
        ctx = await asyncio.to_thread(cursor_context, request.source, request.line,
                                      request.character, request.encoding)
        if ctx.binary:
            self._log_once(f"fim: no completion for {request.uri}: it has NUL bytes (binary?)")
            self.telemetry.count("bad_input")
            return None
        rest = self.typed.lookup(request.uri, ctx.prefix, ctx.suffix, offset=ctx.offset)
        if rest is not None:
            self.telemetry.count("reused")
            return Completion(self._new_id(), rest, ctx, reused=True)
        if delay_s:
            await asyncio.sleep(delay_s)                # a newer keystroke cancels us here
        text = await self._ask_worker(request.uri, ctx, settings)
        if text is None:
            return None
        self.typed.remember(request.uri, ctx.prefix, ctx.suffix, text, offset=ctx.offset)
        return Completion(self._new_id(), text, ctx, reused=False) if text else None

    async def _ask_worker(self, uri: str, ctx: CursorContext, settings: Settings) -> Optional[str]:
        options = {k: v for k, v in settings.engine.items() if k != "max_tokens"}
        max_tokens = settings.engine.get("max_tokens")
        if ctx.single_line:
            max_tokens = min(max_tokens or SINGLE_LINE_TOKENS, SINGLE_LINE_TOKENS)
        try:
            reply = await self.link.infill(ctx.prefix, ctx.suffix, doc_key=uri, single_line=ctx.single_line,
                                           options=options, max_tokens=max_tokens)
        except RequestFailed as exc:
            self.telemetry.count("worker_errors")
            self._log_once(f"fim: the worker refused a completion: {exc}")
            return None
        if reply is None:
            self.telemetry.count("unavailable")
            return None
        if reply.cancelled:          # stopped on the worker's side (it is shutting down): nothing to show
            return None
        self.telemetry.count("computed")
        self.telemetry.worker_answered(uri, reply.stats)
        return finish(reply.text, ctx, settings.max_lines)

    # ---------------------------------------------------------------- helpers

    def _answer(self, started: float, done: Optional[Completion], reason: str) -> Optional[Completion]:
        self.telemetry.count(reason)
        self.telemetry.answered(started, shown=done is not None)
        return done

    def _new_id(self) -> str:
        return f"c{next(self._ids)}"

    def _log_once(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            if len(self._logged) > 4096:
                self._logged.clear()
            self._log(message)
