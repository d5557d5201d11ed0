"""The engine template every engine follows: set each request up as a row, decode all rows
together, turn each row into a result.

    infill(requests) = [start(r) for r] -> decode(rows) -> [result(row, r) for row, r]

Subclasses give `start`, `decode` and `result` (public: the speculative engine drives its
verifier through them). The timing split (encode = set-up per request, decode = the shared
loop), cancellation polling, the common stats and forgetting a closed document live here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import torch

from fim_server.models.family import fim_prompt
from fim_server.wire.options import RESERVED_TOKENS, DecodeConfig, OptionError

from .postprocess import line_complete, postprocess
from .prefix_store import PrefixStore
from .repetition import loop_cut
from .types import InfillRequest, InfillResult, ShouldStop, Stats

WARMUP_REQUEST = InfillRequest("def f(x):\n    return ", "\n")


def published_defaults(kind: str, family, model_config) -> DecodeConfig:
    """DecodeConfig's defaults for an engine of `kind` under the published decoding settings of
    the model's family (Family.defaults), when the family runs on that engine, and the block
    size the checkpoint itself names (config.fim_block_size: SDAR's -b16 ...). Needs no weights:
    `fim-server infill` reads it from the checkpoint's config (models.loader.identify)."""
    config = DecodeConfig(engine=kind)
    if family.kind != kind:
        return config
    defaults = dict(family.defaults)
    block = getattr(model_config, "fim_block_size", None)
    if block:
        defaults["block_size"] = block
    return config.replace(**defaults)


class RowState:
    """What every engine's row has: a stop reason, "" while it runs (rows set `stop_reason`)."""

    stop_reason: str

    @property
    def done(self) -> bool:
        return bool(self.stop_reason)

    def finish(self, reason: str) -> None:
        self.stop_reason = reason


def banned_ids(lm) -> torch.Tensor:
    """bool [V]: ids never committed into a middle (the family's specials, and embedding rows past
    the tokenizer, which padded vocabularies have and which are no token at all)."""
    vocab = lm.model.config.vocab_size                   # width of the logits
    banned = torch.zeros(vocab, dtype=torch.bool, device=lm.device)
    banned[[i for i in lm.ids.banned if i < vocab]] = True
    banned[len(lm.tokenizer):] = True
    return banned


def token_texts(tok) -> list[str]:
    """The decoded text of every token id, through the Rust tokenizer when there is one (5x faster
    than batch_decode on a 150k vocabulary: 0.4 s instead of 1.8 s; only spacing clean-up differs)."""
    ids = [[i] for i in range(len(tok))]
    backend = getattr(tok, "_tokenizer", None)
    return backend.decode_batch(ids, skip_special_tokens=False) if backend is not None else tok.batch_decode(ids)


class PSM:
    """The prompt the AR and block engines share: [bos] <fim_prefix> P <fim_suffix> S <fim_middle>,
    the middle follows. Needs `lm`, `ids` and `context_limit` (an Engine)."""

    def prompt(self, prefix_ids: list[int], suffix_ids: list[int]) -> list[int]:
        """PSM, or SPM (<fim_suffix> S <fim_prefix> P <fim_middle>) for a family trained so."""
        bos = [self.ids.bos] if self.ids.bos is not None else []
        return bos + fim_prompt(prefix_ids, suffix_ids, self.ids.fim_prefix, self.ids.fim_suffix,
                                self.ids.fim_middle, self.lm.family.fim_order)

    @property
    def special_tokens(self) -> int:
        return len(self.prompt([], []))

    def budget(self, config: DecodeConfig) -> int:
        """Tokens left for prefix + suffix once the middle and the special tokens have room."""
        return self.context_limit(config) - config.max_tokens - self.special_tokens


@dataclass(frozen=True)
class Timing:
    t0: float                 # perf_counter when the batch arrived
    encode_ms: float          # set-up time per request
    decode_ms: float          # the shared decoding loop


class Engine(ABC):
    kind = ""
    warmup_tokens = 4
    kv_store: PrefixStore     # the prompt KV kept per document (cross-request reuse)

    def __init__(self, lm, kv_store: Optional[PrefixStore] = None):
        """The model-backed engines' common set-up; the model's family must be of this kind."""
        if lm.family.kind != self.kind:
            raise ValueError(f"{lm.family.name} is a {lm.family.kind} model; the {self.kind} engine cannot run it")
        self.lm = lm
        self.model = lm.model
        self.tok = lm.tokenizer
        self.ids = lm.ids
        self.banned = banned_ids(lm)                         # [V]
        self.kv_store = kv_store if kv_store is not None else PrefixStore()
        # the ids whose text holds a newline: single-line checks decode the middle only once one
        # of them is in it (no other token can put a newline into the decoded text)
        texts = token_texts(self.tok)
        self.newline_ids = frozenset(i for i, text in enumerate(texts) if "\n" in text)
        self.blank_ids = frozenset(i for i, text in enumerate(texts) if not text.strip())   # the repetition guard's

    def default_config(self) -> DecodeConfig:
        """The options a request starts from (`published_defaults` of this engine's model)."""
        return published_defaults(self.kind, self.lm.family, self.lm.model.config)

    def warmup(self) -> float:
        """One tiny request, so the first user request pays no first-use cost; seconds taken."""
        t0 = time.perf_counter()
        self.infill([WARMUP_REQUEST], self.default_config().replace(max_tokens=self.warmup_tokens))
        return time.perf_counter() - t0

    @torch.inference_mode()
    def infill(self, requests: list[InfillRequest], config: DecodeConfig,
               should_stop: Optional[ShouldStop] = None) -> list[InfillResult]:
        if not requests:
            return []
        t0 = time.perf_counter()
        rows = [self.start(r, config) for r in requests]
        t1 = time.perf_counter()
        self.decode(rows, config, should_stop)
        timing = Timing(t0, (t1 - t0) * 1000 / len(rows), (time.perf_counter() - t1) * 1000)
        return [self.result(row, req, config, timing) for row, req in zip(rows, requests)]

    def context_limit(self, config: DecodeConfig) -> int:
        """Prefix + middle + suffix tokens: the request's context_tokens, else the checkpoint's
        serving default (never less than the middle needs), else the model's window; never
        past the window."""
        wanted = config.context_tokens
        if not wanted and self.lm.default_context_tokens:
            wanted = max(self.lm.default_context_tokens, config.max_tokens + RESERVED_TOKENS)
        return min(wanted or self.lm.context_tokens, self.lm.context_tokens)

    def check(self, config: DecodeConfig) -> None:
        """Raise OptionError when `config` cannot run on this model (the worker answers bad_request)."""
        limit = self.lm.context_tokens
        if config.max_tokens + RESERVED_TOKENS > limit:
            raise OptionError("max_tokens", f"max_tokens {config.max_tokens} leaves no room for context in "
                                            f"this model's {limit}-token window (at most {limit - RESERVED_TOKENS})")

    def forget(self, key: str) -> None:
        """A document was closed: drop what was kept for it."""
        self.kv_store.forget(key)

    def cached_documents(self) -> int:
        """Documents whose prompt KV is kept for their next request."""
        return len(self.kv_store)

    # ---------------------------------------------------------------- the three hooks

    @abstractmethod
    def start(self, req: InfillRequest, config: DecodeConfig) -> Any:
        """The request's row: prompt laid out, caches looked up."""

    @abstractmethod
    def decode(self, rows: list, config: DecodeConfig, should_stop: Optional[ShouldStop]) -> None:
        """Decode every row together until each is done (or should_stop says so)."""

    @abstractmethod
    def result(self, row: Any, req: InfillRequest, config: DecodeConfig, timing: Timing) -> InfillResult:
        """The row's text (post-processed) and stats."""

    # ---------------------------------------------------------------- shared by the hooks

    @staticmethod
    def poll(rows: list, should_stop: Optional[ShouldStop]) -> None:
        """Finish the running rows (anything with `done` and `finish(reason)`) that should stop."""
        running = [i for i, r in enumerate(rows) if not r.done]
        if should_stop is None or not running:
            return
        for i in set(should_stop(running)) & set(running):
            rows[i].finish("cancelled")

    def take(self, row, token: int, config: DecodeConfig) -> None:
        """Record one token of a running row decoded left to right (`row.ids`, `row.finish`) and
        apply its stop rules: the end token, a loop (the repetition guard), a completed line in
        single-line mode, max_tokens."""
        if token in self.ids.end_of_middle:
            return row.finish("end")            # cut there: the end token is not part of the middle
        row.ids.append(token)
        if self.cut_loop(row, config, new=1):
            return
        if config.single_line and self.line_complete(row.ids):
            return row.finish("line")
        if len(row.ids) >= config.max_tokens:
            return row.finish("length")

    def cut_loop(self, row, config: DecodeConfig, new: Optional[int] = None) -> bool:
        """The repetition guard (fim_server.engine.repetition): when `row.ids` (its last `new`
        tokens, or all) complete a loop, cut them after its first copy and finish the row."""
        if not config.repetition_guard:
            return False
        cut = loop_cut(row.ids, self.blank_ids, new)
        if cut is None:
            return False
        del row.ids[cut:]
        row.finish("repeat")
        return True

    def line_complete(self, ids: list[int]) -> bool:
        """Single-line mode may stop after the middle `ids` (postprocess.line_complete of their
        text), decoded only once a newline token is among them: the check runs every step."""
        return not self.newline_ids.isdisjoint(ids) and line_complete(self.tok.decode(ids))

    def text(self, ids: list[int], req: InfillRequest, config: DecodeConfig) -> str:
        """The middle's text, post-processed once, here (fim_server.engine.postprocess)."""
        return postprocess(self.tok.decode(ids), req.prefix, req.suffix, config.single_line)

    @staticmethod
    def close_stats(stats: Stats, text: str, stop_reason: str, timing: Timing) -> Stats:
        """The fields every engine fills the same way; tokens per forward last."""
        stats.encode_ms = round(timing.encode_ms, 3)
        stats.decode_ms = round(timing.decode_ms, 3)
        stats.cancelled = stop_reason == "cancelled"
        stats.stop_reason = stop_reason if text or stats.cancelled else "empty"
        stats.latency_ms = round((time.perf_counter() - timing.t0) * 1000, 3)
        return stats.finish()
