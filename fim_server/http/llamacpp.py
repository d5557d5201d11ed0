"""llama.cpp's `POST /infill` and `GET /health` (llama.vim, llama.vscode).

Request: `input_prefix` and `input_suffix` (required), `prompt` (the cursor line's start: it ends
the prefix), `input_extra` ([{text, filename}]: extra context, used when the budget allows),
`n_predict` (0: warm-up only, answered at once; < 0: the default), `t_max_predict_ms` (the
deadline, raised to --min-deadline-ms), `cache_prompt` (kv_reuse), `n_cmpl` / `n` (an array of
answers), `stop`, `n_indent`, `response_fields`, `stream`, `temperature`, `seed`; sampler fields
(`top_k`, `top_p`, `samplers`, `id_slot`, ...) are accepted and ignored.

Answer: llama.cpp's object (`content`, `timings`, `tokens_cached`, `truncated`, `generation_settings`,
...), compact; with `response_fields` only those paths, each under its literal key
(`"timings/prompt_n": 12`), as llama.cpp does.
"""

from __future__ import annotations

from typing import Any, Optional

from aiohttp import web

from .body import Fields, HttpError, read_json
from .context import (Context, client_key, context, dumps, event_stream, health_body, json_response,
                      server_timing)
from .job import Completion, FimJob, choices, deadline_s, decoding, with_extra


async def infill(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    body = await read_json(request, ctx.config.max_body_bytes)
    f = Fields(body)
    job, stream = parse(ctx, f, body)
    fields = f.strings("response_fields") if f.has("response_fields") else None
    if f.integer("n_predict") == 0:
        answers = [Completion("", "stop", {"stop_reason": "warm-up"})] * job.n     # nothing to predict
    else:
        answers = await ctx.completer.complete(job, client_key(request, "infill"))
    objects = [pick(result(ctx, job, c, i, f.integer("id_slot", 0)), fields) for i, c in enumerate(answers)]
    if stream:
        return await event_stream(request, [dumps(o) for o in objects], done=False, headers=server_timing(answers))
    return json_response(objects[0] if len(objects) == 1 else objects, headers=server_timing(answers))


def parse(ctx: Context, f: Fields, body: dict[str, Any]) -> tuple[FimJob, bool]:
    prefix, suffix = f.text("input_prefix"), f.text("input_suffix")
    for name, value in (("input_prefix", prefix), ("input_suffix", suffix)):
        if value is None:
            raise HttpError(400, f"field {name!r} is required")
    extra = []
    for i, chunk in enumerate(f.array("input_extra")):
        if not isinstance(chunk, dict):
            raise HttpError(400, f"input_extra[{i}] must be an object with a 'text'")
        text = Fields(chunk, f"input_extra[{i}].").text("text")
        if text is None:
            raise HttpError(400, f"field 'input_extra[{i}].text' is required")
        extra.append(text)
    n_predict = f.integer("n_predict", -1)
    changes = {"temperature": f.number("temperature"), "seed": f.integer("seed"),
               "kv_reuse": f.boolean("cache_prompt")}
    job = FimJob(
        prefix=with_extra(prefix + f.text("prompt", ""), extra, ctx.config.max_extra_chars), suffix=suffix,
        decoding=decoding(ctx.config, n_predict if n_predict > 0 else None, changes, body),
        deadline_s=deadline_s(ctx.config, f.number("t_max_predict_ms")),
        n=choices(ctx.config, f.integer("n_cmpl", f.integer("n"))),
        stop=tuple(f.strings("stop")), n_indent=max(0, f.integer("n_indent", 0)))
    return job, bool(f.boolean("stream", False))


def result(ctx: Context, job: FimJob, c: Completion, index: int, id_slot: Optional[int]) -> dict[str, Any]:
    """llama.cpp's final result object (`to_json_non_oaicompat`) for one answer."""
    s = c.stats
    prompt_n, predicted_n = int(s.get("prompt_tokens", 0)), int(s.get("tokens", 0))
    prompt_ms, predicted_ms = float(s.get("encode_ms", 0.0)), float(s.get("decode_ms", 0.0))
    cached = int(s.get("reused_tokens", 0))
    timings = {"cache_n": cached, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
               "prompt_per_token_ms": per(prompt_ms, prompt_n), "prompt_per_second": rate(prompt_n, prompt_ms),
               "predicted_n": predicted_n, "predicted_ms": predicted_ms,
               "predicted_per_token_ms": per(predicted_ms, predicted_n),
               "predicted_per_second": rate(predicted_n, predicted_ms)}
    stop_type = "word" if c.stopped_by else "limit" if c.finish_reason == "length" else "eos"
    return {"index": index, "content": c.text, "tokens": [], "id_slot": id_slot, "stop": True,
            "model": ctx.link.model, "tokens_predicted": predicted_n, "tokens_evaluated": prompt_n,
            "generation_settings": {"n_ctx": int(ctx.link.info.get("context_tokens", 0)),
                                    "n_predict": job.decoding.max_tokens, "model": ctx.link.model,
                                    "temperature": job.decoding.temperature, "stop": list(job.stop),
                                    "n_indent": job.n_indent},
            "prompt": "", "has_new_line": "\n" in c.text, "truncated": bool(s.get("truncated", False)),
            "stop_type": stop_type, "stopping_word": c.stopped_by, "tokens_cached": cached,
            "timings": timings}


def per(ms: float, n: int) -> float:
    return round(ms / n, 3) if n else 0.0


def rate(n: int, ms: float) -> float:
    return round(n * 1000.0 / ms, 3) if ms > 0 else 0.0


def pick(obj: dict[str, Any], paths: Optional[list[str]]) -> dict[str, Any]:
    """llama.cpp's `response_fields`: each path (`a/b`) found in obj, under its literal key."""
    if paths is None:
        return obj
    picked: dict[str, Any] = {}
    for path in paths:
        value: Any = obj
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            picked[path] = value
    return picked


async def health(request: web.Request) -> web.Response:
    ctx = context(request)
    if ctx.link.state == "starting":
        raise HttpError(503, "Loading model")
    if not await ctx.link.probe():
        raise HttpError(503, f"no worker answers at {ctx.config.connect}")
    return json_response(health_body(ctx))
