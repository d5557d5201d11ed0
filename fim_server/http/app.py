"""The application: routes, the auth and error middleware, and serving it (`fim-server http`).

aiohttp rather than Starlette/uvicorn, for how each handles a client that disconnects mid-request:
with `handler_cancellation=True` aiohttp cancels the handler of any request whose connection
closes, JSON and streaming alike, so one `except CancelledError` in the completer cancels the
worker request; a plain Starlette JSONResponse handler runs to completion after its client left.
Replies are written with compact JSON (context.dumps), never aiohttp's default `json_response`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import sys
from typing import Awaitable, Callable

from aiohttp import web

from . import llamacpp, ollama, openai, tabby
from .body import HttpError
from .completer import Completer
from .config import ConfigError, HttpConfig, from_arguments
from .context import CTX, Context, context, json_response
from .worker import WorkerLink

log = logging.getLogger(__name__)

PUBLIC = ("/health", "/v1/health")          # health probes need no key (as llama.cpp's)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.Request, exc: HttpError) -> web.Response:
    if request.path.startswith("/api/"):                      # Ollama's shape
        return json_response({"error": exc.message}, exc.status)
    return json_response({"error": {"code": exc.status, "message": exc.message, "type": exc.kind}}, exc.status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is an answer with a message; the server keeps serving."""
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:            # the router's 404/405, aiohttp's 413
        if exc.status < 400:
            raise
        return error_response(request, HttpError(exc.status, exc.reason))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(request, HttpError(500, f"internal error: {type(exc).__name__}: {exc}"[:500]))


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = context(request).config.api_key
    if key and request.path not in PUBLIC:
        bearer = request.headers.get("Authorization", "")
        given = bearer[len("Bearer "):].strip() if bearer.startswith("Bearer ") else \
            request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8", "replace")):
            raise HttpError(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                            "authentication_error")
    return await handler(request)


async def stats(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response({"http": ctx.completer.snapshot(), "worker_state": ctx.link.state,
                          "worker": await ctx.link.stats()})


def build_app(config: HttpConfig, link: WorkerLink) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[errors, auth])
    app[CTX] = Context(config, link, Completer(link))
    r = app.router
    r.add_post("/infill", llamacpp.infill)
    for path in ("/health", "/v1/health"):
        r.add_get(path, llamacpp.health)
    r.add_post("/v1/health", llamacpp.health)          # tabby-agent retries its health check as a POST
    for path in ("/v1/completions", "/completions", "/beta/completions", "/v1/fim/completions", "/fim/completions"):
        r.add_post(path, openai.completions)
    r.add_post("/v1/events", tabby.events)
    r.add_post("/api/generate", ollama.generate)
    r.add_post("/api/show", ollama.show)
    r.add_get("/api/tags", ollama.tags)
    r.add_get("/fim/stats", stats)
    return app


async def serve(config: HttpConfig, stop: asyncio.Event | None = None) -> None:
    """Listen, print `listening URL`, connect to (or start) the worker, print `ready URL` once it
    answers; run until SIGTERM/SIGINT (or `stop`)."""
    stop = stop or asyncio.Event()
    url = ""
    link = WorkerLink(config, on_up=lambda: print(f"ready {url}", flush=True))
    runner = web.AppRunner(build_app(config, link), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        port = runner.addresses[0][1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        url = f"http://{host}:{port}"
        print(f"listening {url}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await link.start()
        await stop.wait()
    finally:
        await runner.cleanup()
        await link.close()


def command(args, usage_error: type[Exception]) -> int:
    """`fim-server http`: `usage_error` is the CLI's one-line error."""
    logging.getLogger("fim_server.http").setLevel(logging.INFO)
    try:
        config = from_arguments(args)
        asyncio.run(serve(config))
    except ConfigError as exc:
        raise usage_error(str(exc)) from None
    sys.stdout.flush()
    return 0
