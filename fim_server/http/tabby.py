"""Tabby's API as tabby-agent (VS Code, IntelliJ, Vim/Neovim) calls it.

`POST /v1/completions` with `segments` (dispatched here from the OpenAI handler: same path):
`{language, segments: {prefix, suffix, filepath, declarations, relevant_snippets_from_*,
clipboard, ...}, temperature, seed, mode}` answers `{id, choices: [{index, text}]}`. Declarations and
snippets are extra context, used when the budget allows. `GET|POST /v1/health` is llama.cpp's
/health (`llamacpp.health`: its body has the non-empty `model` and the `version` object the agent needs);
`POST /v1/events` (the agent's view/select/dismiss telemetry) answers 200.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .body import Fields, HttpError
from .context import Context, client_key, completion_id, context, json_response, server_timing
from .job import FimJob, decoding, with_extra

SNIPPETS = ("declarations", "relevant_snippets_from_changed_files", "relevant_snippets_from_recently_opened_files")


async def completion(request: web.Request, body: dict[str, Any]) -> web.Response:
    ctx = context(request)
    job = parse(ctx, Fields(body), body)
    [answer] = await ctx.completer.complete(job, client_key(request, "tabby", job.document))
    reply = {"id": completion_id(), "choices": [{"index": 0, "text": answer.text}]}
    mode = Fields(body).text("mode", limit=64)
    return json_response({**reply, "mode": mode} if mode else reply, headers=server_timing([answer]))


def parse(ctx: Context, f: Fields, body: dict[str, Any]) -> FimJob:
    segments = f.object("segments")
    extra = []
    for name in SNIPPETS:
        for i, item in enumerate(segments.array(name)):
            if not isinstance(item, dict):
                raise HttpError(400, f"segments.{name}[{i}] must be an object with a 'body'")
            extra.append(Fields(item, f"segments.{name}[{i}].").text("body", ""))
    changes = {"temperature": f.number("temperature"), "seed": f.integer("seed")}
    return FimJob(prefix=with_extra(segments.text("prefix", ""), extra, ctx.config.max_extra_chars),
                  suffix=segments.text("suffix", ""), decoding=decoding(ctx.config, None, changes, body),
                  deadline_s=ctx.config.timeout_s, document=segments.text("filepath", "", limit=4096))


async def events(request: web.Request) -> web.Response:
    await request.read()                    # within client_max_size; its content is not used
    return web.Response(status=200)
