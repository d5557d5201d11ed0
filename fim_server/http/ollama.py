"""Ollama's `POST /api/generate` (with `suffix`), `POST /api/show` and `GET /api/tags`.

`/api/generate`: `prompt`, `suffix`, `options` (`num_predict`, `temperature`, `seed`, `stop`, and
any DecodeConfig name), `stream` (default true: NDJSON, the middle then a closing object with
`done: true`, durations in ns); `stream: false` gives one object. A prompt with FIM tokens and no
suffix (llm-ls, Twinny) is split. `system`, `template`, `raw`, `format`, `keep_alive` are ignored.
`/api/show` answers a template that contains `.Suffix`: that is how clients (Continue) decide
the model does FIM. Errors are `{"error": "..."}`, as Ollama's.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .body import Fields, read_json
from .context import Context, client_key, context, dumps, json_response, server_timing
from .fimtokens import split_prompt
from .job import Completion, FimJob, decoding, with_extra

TEMPLATE = ("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
            "{{ else }}{{ .Prompt }}{{ end }}")


async def generate(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    body = await read_json(request, ctx.config.max_body_bytes)
    f = Fields(body)
    job = parse(ctx, f, body)
    started = time.perf_counter_ns()
    [answer] = await ctx.completer.complete(job, client_key(request, "ollama"))
    model = f.text("model", ctx.link.model, limit=1024) or ctx.link.model
    head = {"model": model, "created_at": created_at()}
    last = {**head, "response": "", "done": True, **closing(answer, time.perf_counter_ns() - started)}
    if not f.boolean("stream", True):
        return json_response({**last, "response": answer.text}, headers=server_timing([answer]))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", **server_timing([answer])})
    await response.prepare(request)
    if answer.text:
        await response.write((dumps({**head, "response": answer.text, "done": False}) + "\n").encode())
    await response.write((dumps(last) + "\n").encode())
    await response.write_eof()
    return response


def parse(ctx: Context, f: Fields, body: dict[str, Any]) -> FimJob:
    prompt, suffix = f.text("prompt", ""), f.text("suffix")
    extra: list[str] = []
    if suffix is None and (split := split_prompt(prompt)) is not None:
        prompt, suffix, extra = split.prefix, split.suffix, [split.extra]
    options = f.object("options")
    num_predict = options.integer("num_predict")
    changes = {"temperature": options.number("temperature"), "seed": options.integer("seed")}
    return FimJob(prefix=with_extra(prompt, extra, ctx.config.max_extra_chars), suffix=suffix or "",
                  decoding=decoding(ctx.config, num_predict if num_predict and num_predict > 0 else None,
                                    changes, options.obj),
                  deadline_s=ctx.config.timeout_s, stop=tuple(options.strings("stop")))


def closing(answer: Completion, total_ns: int) -> dict[str, Any]:
    s = answer.stats
    return {"done_reason": answer.finish_reason, "total_duration": total_ns, "load_duration": 0,
            "prompt_eval_count": int(s.get("prompt_tokens", 0)),
            "prompt_eval_duration": int(float(s.get("encode_ms", 0.0)) * 1e6),
            "eval_count": int(s.get("tokens", 0)), "eval_duration": int(float(s.get("decode_ms", 0.0)) * 1e6)}


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def details(ctx: Context) -> dict[str, Any]:
    family = str(ctx.link.info.get("family", ""))
    return {"parent_model": "", "format": "safetensors", "family": family, "families": [family] if family else [],
            "parameter_size": "", "quantization_level": ""}


async def show(request: web.Request) -> web.Response:
    ctx = context(request)
    await read_json(request, ctx.config.max_body_bytes)          # {"model"|"name": ...}: one model here
    return json_response({"license": "", "modelfile": f"FROM {ctx.link.model}\nTEMPLATE \"\"\"{TEMPLATE}\"\"\"\n",
                          "parameters": "", "template": TEMPLATE, "details": details(ctx), "model_info": {},
                          "capabilities": ["completion", "insert"], "modified_at": created_at()})


async def tags(request: web.Request) -> web.Response:
    ctx = context(request)
    if not ctx.link.info:
        await ctx.link.probe()
    name = ctx.link.model
    return json_response({"models": [{"name": name, "model": name, "modified_at": created_at(), "size": 0,
                                      "digest": "", "details": details(ctx)}]})
