"""OpenAI-style `POST /v1/completions` with `suffix`, and Mistral/Codestral `POST /v1/fim/completions`.

One handler (also at `/completions`, `/beta/completions`, `/fim/completions`). A body with
`segments` is Tabby's (same path: tabby.py). Otherwise: `prompt` (a string, or a list of one),
`suffix`, `max_tokens`, `temperature`, `seed`, `n`, `stop`, `stream`, `stream_options.include_usage`;
a prompt that carries FIM tokens and no suffix is split (fimtokens.py); a suffix of
`<|endoftext|>` is no suffix (Continue's Inception provider).

Each choice carries `text` (OpenAI, Inception) and `message` / `delta` (Mistral), so either kind of
client reads it. Streaming is server-sent events: one chunk per choice with its `finish_reason`
set (Tabby's reader stops there), the usage chunk when asked for, then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import tabby
from .body import Fields, HttpError, read_json
from .context import (Context, client_key, completion_id, context, dumps, event_stream, json_response, now,
                      server_timing)
from .fimtokens import split_prompt
from .job import EMPTY_SUFFIX, Completion, FimJob, choices, decoding, with_extra


async def completions(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    body = await read_json(request, ctx.config.max_body_bytes)
    if "segments" in body:
        return await tabby.completion(request, body)
    f = Fields(body)
    job = parse(ctx, f, body)
    answers = await ctx.completer.complete(job, client_key(request, "openai"))
    head = {"id": completion_id(), "object": "text_completion", "created": now(), "model": ctx.link.model}
    usage = usage_of(answers)
    if f.boolean("stream", False):
        events = [dumps({**head, "choices": [choice(i, a, stream=True)]}) for i, a in enumerate(answers)]
        if f.object("stream_options").boolean("include_usage", False):
            events.append(dumps({**head, "choices": [], "usage": usage}))
        return await event_stream(request, events, done=True, headers=server_timing(answers))
    return json_response({**head, "choices": [choice(i, a, stream=False) for i, a in enumerate(answers)],
                          "usage": usage}, headers=server_timing(answers))


def parse(ctx: Context, f: Fields, body: dict[str, Any]) -> FimJob:
    prompt = prompt_of(f)
    suffix = f.text("suffix")
    extra: list[str] = []
    if suffix is None and (split := split_prompt(prompt)) is not None:
        prompt, suffix, extra = split.prefix, split.suffix, [split.extra]
    if suffix is None or suffix == EMPTY_SUFFIX:
        suffix = ""
    changes = {"temperature": f.number("temperature"), "seed": f.integer("seed")}
    return FimJob(prefix=with_extra(prompt, extra, ctx.config.max_extra_chars), suffix=suffix,
                  decoding=decoding(ctx.config, f.integer("max_tokens"), changes, body),
                  deadline_s=ctx.config.timeout_s, n=choices(ctx.config, f.integer("n")),
                  stop=tuple(f.strings("stop")))


def prompt_of(f: Fields) -> str:
    value = f.obj.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return Fields({"prompt": value[0]}).text("prompt")
    if isinstance(value, list):
        raise HttpError(400, "field 'prompt' must be a string (or a list of one string)")
    prompt = f.text("prompt")
    if prompt is None:
        raise HttpError(400, "field 'prompt' is required")
    return prompt


def choice(index: int, answer: Completion, stream: bool) -> dict[str, Any]:
    chat = {"delta": {"role": "assistant", "content": answer.text}} if stream else \
        {"message": {"role": "assistant", "content": answer.text}}
    return {"index": index, "text": answer.text, **chat, "logprobs": None, "finish_reason": answer.finish_reason}


def usage_of(answers: list[Completion]) -> dict[str, int]:
    prompt = int(answers[0].stats.get("prompt_tokens", 0)) if answers else 0
    completion = sum(int(a.stats.get("tokens", 0)) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
