"""What every API handler shares: the app's context, who the client is, and writing answers
(compact JSON: llama.vim drops a body that does not match `"content":"`, with no space)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from aiohttp import web

from fim_server import __version__

from .completer import Completer
from .config import HttpConfig
from .job import Completion
from .worker import WorkerLink


@dataclass
class Context:
    config: HttpConfig
    link: WorkerLink
    completer: Completer


CTX = web.AppKey("fim_http", Context)


def context(request: web.Request) -> Context:
    return request.app[CTX]


def dumps(data: Any) -> str:
    """Compact, one line, ASCII (a lone surrogate cannot break the encoding)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def json_response(data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)


def server_timing(answers: list[Completion]) -> dict[str, str]:
    """`Server-Timing: worker;dur=MS`: the worker's own time (receipt to reply) for the answer, so
    that a client (or bench/http_overhead.py) can tell it from the front-end's and the network's."""
    times = [float(a.stats["latency_ms"]) for a in answers if isinstance(a.stats.get("latency_ms"), (int, float))]
    return {"Server-Timing": f"worker;dur={max(times):.3f}"} if times else {}


def client_key(request: web.Request, family: str, document: str = "") -> str:
    """Requests with the same key come from one client: its newest one wins."""
    auth = request.headers.get("Authorization", "") + request.headers.get("x-api-key", "")
    credentials = hashlib.sha256(auth.encode("utf-8", "replace")).hexdigest()[:12] if auth else ""
    return "|".join((family, request.remote or "", request.headers.get("User-Agent", ""), credentials, document))


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


async def event_stream(request: web.Request, events: list[str], done: bool,
                       headers: Optional[dict[str, str]] = None) -> web.StreamResponse:
    """Server-sent events, `data: ...` each, then `data: [DONE]` when `done` (OpenAI; llama.cpp's
    own stream ends without it). No ping comments: Continue takes `: ping` for the end."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **(headers or {})})
    await response.prepare(request)
    for event in events + (["[DONE]"] if done else []):
        await response.write(f"data: {event}\n\n".encode())
    await response.write_eof()
    return response


def health_body(ctx: Context) -> dict[str, Any]:
    """llama.cpp's /health (`status`) and Tabby's /v1/health (`model`, `version.git_describe`)
    in one body."""
    info = ctx.link.info
    return {"status": "ok", "model": ctx.link.model, "chat_model": None, "device": info.get("device", ""),
            "engine": info.get("engine", ""), "arch": platform.machine(), "cpu_info": "",
            "cpu_count": os.cpu_count(), "cuda_devices": [], "models": {},
            "version": {"build_date": "", "build_timestamp": "", "git_sha": "",
                        "git_describe": f"v{__version__}-fim-server"}}
