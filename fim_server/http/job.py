"""FimJob: what every API's request becomes, and the decoding options it carries.

Decoding options go through the one parser (`fim_server.wire.options.apply`): an API's own
names are mapped first (`n_predict`, `num_predict` and `max_tokens` to max_tokens, `cache_prompt`
to kv_reuse, `temperature`, `seed`), and any DecodeConfig name a body carries (`threshold`,
`block_size`, `single_line`, ...; not `engine`, which the worker fixes) is taken as it is. A value
the parser refuses is a 400 naming the option; fields that are neither are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from fim_server.wire.options import FIELDS, DecodeConfig, OptionError, apply

from .body import HttpError
from .config import HttpConfig

PASSED_THROUGH = tuple(name for name in FIELDS if name != "engine")   # DecodeConfig names a body may carry
EMPTY_SUFFIX = "<|endoftext|>"       # Continue's Inception provider sends it for "no suffix"


@dataclass(frozen=True)
class Decoding:
    """What the worker is asked for, checked: its options map, max_tokens and single_line."""
    options: tuple[tuple[str, Any], ...] = ()
    max_tokens: int = 64
    single_line: Optional[bool] = None

    @property
    def temperature(self) -> float:
        return dict(self.options).get("temperature", 0.0)


@dataclass(frozen=True)
class FimJob:
    prefix: str
    suffix: str
    decoding: Decoding
    deadline_s: float
    n: int = 1                               # choices (n, n_cmpl): one computation when greedy
    stop: tuple[str, ...] = ()               # cut the middle at the first of these
    n_indent: int = 0                        # llama.cpp: cut at a later line indented less than this
    document: str = ""                       # a file path when the API names one (part of the client key)

    @property
    def key(self) -> tuple:
        """Identical requests share one computation (post-filters are applied per request)."""
        d = self.decoding
        return (self.prefix, self.suffix, d.options, d.max_tokens, d.single_line)


def decoding(config: HttpConfig, max_tokens: Optional[int], changes: Mapping[str, Any],
             *sources: Mapping[str, Any]) -> Decoding:
    """The request's decoding options: `changes` (the API's own names, already mapped), then any
    DecodeConfig names in `sources` (the body, Ollama's `options`); checked by the one parser.
    max_tokens: None for the default, cut to config.max_tokens."""
    values: dict[str, Any] = {}
    for source in sources:
        values.update({k: v for k, v in source.items() if k in PASSED_THROUGH and v is not None})
    values.update({k: v for k, v in changes.items() if v is not None})
    if max_tokens is None:
        max_tokens = values.pop("max_tokens", None)
    else:
        values.pop("max_tokens", None)
    if max_tokens is None:
        max_tokens = min(config.default_max_tokens, config.max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise HttpError(400, f"max_tokens must be a whole number; got {max_tokens!r}"[:200])
    if max_tokens < 1:
        raise HttpError(400, f"max_tokens must be at least 1; got {max_tokens}")
    max_tokens = min(max_tokens, config.max_tokens)
    try:
        checked = apply(DecodeConfig(), {**values, "max_tokens": max_tokens})
    except OptionError as exc:
        raise HttpError(400, f"bad decoding option {exc.name!r}: {exc}") from None
    single_line = values.pop("single_line", None)
    options = {k: checked.to_dict()[k] for k in values}
    return Decoding(tuple(sorted(options.items())), max_tokens,
                    None if single_line is None else checked.single_line)


def choices(config: HttpConfig, n: Optional[int]) -> int:
    if n is None:
        return 1
    if not 1 <= n <= config.max_choices:
        raise HttpError(400, f"n must be in 1..{config.max_choices}; got {n}")
    return n


def with_extra(prefix: str, chunks: Iterable[str], limit: int) -> str:
    """Extra context before the prefix, newest chunks (last) first while `limit` characters allow.
    It is the head of the prompt, so the engine's context budget drops it before the file's own
    text: it is used when the budget allows."""
    kept: list[str] = []
    room = limit
    for chunk in reversed([c for c in chunks if c.strip()]):
        chunk = chunk if chunk.endswith("\n") else chunk + "\n"
        if len(chunk) > room:
            break
        kept.append(chunk)
        room -= len(chunk)
    return "".join(reversed(kept)) + prefix


def deadline_s(config: HttpConfig, ms: Optional[float]) -> float:
    """A client's deadline in ms (llama.cpp's t_max_predict_ms), raised to the configured floor."""
    if ms is None or ms <= 0:
        return config.timeout_s
    return max(ms, config.min_deadline_ms) / 1000.0


@dataclass
class Completion:
    """One choice as the APIs report it."""
    text: str
    finish_reason: str = "stop"              # stop | length (OpenAI's names)
    stats: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = ""                     # the stop string that cut it


def post_filter(text: str, job: FimJob) -> tuple[str, str]:
    """The middle cut at the first stop string and, with n_indent, before the first later
    line indented less (llama.cpp's rule); (text, the stop string that cut it)."""
    word = ""
    cut = len(text)
    for stop in job.stop:
        at = text.find(stop) if stop else -1
        if 0 <= at < cut:
            cut, word = at, stop
    text = text[:cut]
    if job.n_indent > 0:
        lines = text.split("\n")
        for i, line in enumerate(lines[1:], start=1):
            body = line.lstrip(" \t")
            if body and len(line) - len(body) < job.n_indent:
                text = "\n".join(lines[:i])
                break
    return text, word
