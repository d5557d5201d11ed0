"""Decoding options: one frozen dataclass that travels with every request, and the one parser
every front-end uses to build it (wire requests, LSP settings, command-line flags, bench specs).

    apply(base, {"threshold": 0.7})          -> DecodeConfig, or OptionError naming the option
    check_each({"threshold": 2, "cache": "dual"}) -> (the usable ones, one problem line per bad one)
    parse_text("kv_shift", "off")            -> False   (flag and bench values arrive as text)
    add_arguments(parser) / from_arguments(args, base): a --flag per option; the flags given win over base

No torch here: the language server imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

ENGINES = ("diffusion", "ar", "speculative", "block")
CACHE_MODES = ("none", "prefix", "dual")
UNMASK_RULES = ("threshold", "factor", "eb")
LENGTH_POLICIES = ("auto", "expand", "fixed")
RESERVED_TOKENS = 8          # special tokens a layout may add around prefix, middle and suffix (BOS, FIM, ...)


def option(default: Any, help: str, choices: tuple[str, ...] = (), lo: float = 0, hi: float = 0) -> Any:
    """A DecodeConfig field: its default, one line of help, and its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices, "range": (lo, hi)})


@dataclass(frozen=True)
class DecodeConfig:
    engine: str = option("block", "block (block diffusion: PSM, causal across blocks; the default: 2.6-11x "
                                  "faster than the canvas at about its quality, bench/results/block-*) | "
                                  "diffusion (in-place canvas) | ar | speculative (diffusion drafts, AR verifies)",
                         ENGINES)
    max_tokens: int = option(64, "cap on middle tokens (the canvas never grows past it)", lo=1, hi=4096)
    single_line: bool = option(False, "stop at the end of the first line of the middle")
    repetition_guard: bool = option(True, "cut a middle caught in a loop (`b, b, b, b`) after the loop's first "
                                          "copy; left-to-right engines stop there (bundled twins: edit "
                                          "similarity up on 3 of 4 suites, 30-40% fewer forwards, "
                                          "bench/results/model_eval-guard-*.json)")
    temperature: float = option(0.0, "0 = greedy", lo=0.0, hi=10.0)
    seed: int = option(0, "used only when temperature > 0", lo=-(1 << 63), hi=(1 << 63) - 1)
    context_tokens: int = option(0, "prefix + middle + suffix budget in tokens; 0 = the checkpoint's serving "
                                        "default (config.fim_default_context_tokens), else its window",
                                 lo=0, hi=1 << 20)
    kv_reuse: bool = option(True, "reuse the KV of the tokens a request shares with the document's previous one")
    # diffusion only
    block_size: int = option(8, "semi-autoregressive block length (canvas positions); 8 measured faster and "
                                "better than 32 with the bundled twin (bench/results/modes-*)", lo=1, hi=4096)
    sub_block_size: int = option(0, "block engine: fill each block sub-block by sub-block of this many slots, "
                                    "left to right (Fast-dLLM v2: 8); 0 = the whole block at once", lo=0, hi=4096)
    lossless: bool = option(False, "block engine: verify each parallel draft with the model's own next-token "
                                   "predictions, so the middle equals its greedy left-to-right decoding "
                                   "(shifted models; greedy only: a request that samples without naming "
                                   "it runs the threshold mode); the bundled block coder's default")
    lookup: int = option(12, "lossless: draft up to N tokens by prompt lookup, what followed earlier occurrences "
                             "of the last tokens in the document or middle, verified beside the masks' "
                             "guesses (bundled coder: 17-29% fewer forwards at 8, same middle, "
                             "bench/results/model_eval-lookup-{0,8}.json; 12 instead of 8: +0.07-0.25 tokens "
                             "per forward, p50 no worse, bench/results/lossless-lookup-length.json); 0 = off",
                         lo=0, hi=64)
    lookup_candidates: int = option(3, "lossless: up to N different lookup continuations, verified in one "
                                       "forward as a token tree with the masks' guesses", lo=1, hi=16)
    mask_alternatives: int = option(2, "lossless: also verify up to N chains of the masks' guesses that take one "
                                       "slot's second choice (the likeliest to be reached and right first); "
                                       "bundled coder: +0.04 / +0.09 / +0.05 tokens per forward at 2 on "
                                       "HumanEval single / multi-line and repository middles, none more at 3 "
                                       "(bench/results/lossless-mask-alternatives.json); 0 = off", lo=0, hi=16)
    ngram: int = option(6, "lossless: draft up to N tokens more by chaining the checkpoint's next-token table "
                           "(draft_ngrams.safetensors beside the weights, counted on its training corpus; "
                           "python -m fim_server.train.ngrams), one more branch of the tree in rounds where "
                           "prompt lookup finds nothing; 0 = off", lo=0, hi=64)
    cache: str = option("dual", "none | prefix | dual", CACHE_MODES)
    refresh_every: int = option(0, "recompute the cache every N steps inside a block; 0 = at block start only",
                                lo=0, hi=1 << 20)
    kv_shift: bool = option(True, "dual: after an expand/delete in the block, re-rotate the cached keys behind "
                                  "it to their new positions instead of a full refresh (plain-RoPE models)")
    unmask: str = option("threshold", "threshold | factor | eb", UNMASK_RULES)
    threshold: float = option(0.9, "tau: commit every masked position with confidence >= tau", lo=0.0, hi=1.0)
    factor: float = option(1.0, "f: commit the largest n with c_(n) >= 1 - f / (n + 1)", lo=0.0, hi=64.0)
    eb_gamma: float = option(0.1, "eb: commit the most confident while their entropy sum less the largest "
                                  "<= gamma (nats)", lo=0.0, hi=1000.0)
    early_commit: float = option(0.0, "commit the whole block once every masked top1 - top2 probability gap "
                                      ">= this; 0 = off", lo=0.0, hi=1.0)
    length: str = option("auto", "auto (expand if the model can) | expand | fixed (over-allocate + end fill)",
                         LENGTH_POLICIES)
    initial_length: int = option(16, "starting canvas for the expand/delete policy", lo=1, hi=4096)
    max_steps: int = option(0, "hard cap on denoising steps per request; 0 = 4 * max_tokens", lo=0, hi=1 << 20)
    end_guard: bool = option(True, "end/delete tokens only at the first undecided slot, after >= 1 token: a "
                                   "settled end closes the middle (prevents the end-token over-commit collapse)")
    # speculative only (the diffusion options above shape the draft)
    draft_length: int = option(4, "speculative: middle tokens the diffusion coder drafts per AR verification",
                               lo=1, hi=4096)
    draft_steps: int = option(1, "speculative: denoising steps per draft at most (the last commits what is left)",
                              lo=1, hi=4096)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.context_tokens and self.context_tokens < self.max_tokens + RESERVED_TOKENS:
            raise OptionError("context_tokens", f"context_tokens {self.context_tokens} cannot hold a "
                                                f"{self.max_tokens}-token middle: give at least "
                                                f"{self.max_tokens + RESERVED_TOKENS} (max_tokens + "
                                                f"{RESERVED_TOKENS}) or 0 for the model's own limit")

    @property
    def step_cap(self) -> int:
        return self.max_steps or 4 * self.max_tokens + 8

    def replace(self, **changes: Any) -> "DecodeConfig":
        """A copy with `changes` applied; unknown option names raise OptionError."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise OptionError(unknown[0], f"unknown decoding option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(DecodeConfig)}
TYPES: dict[str, type] = {name: type(f.default) for name, f in FIELDS.items()}


class OptionError(ValueError):
    """A decoding option that cannot be used; `name` is the option."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def _check(f: dataclasses.Field, value: Any) -> None:
    """Type, choices and range of one field's value (the dataclass runs it on every field)."""
    expected = TYPES.get(f.name, type(f.default))
    choices, (lo, hi) = f.metadata["choices"], f.metadata["range"]
    if expected is bool:
        if not isinstance(value, bool):
            raise OptionError(f.name, f"{f.name} must be true or false; got {value!r}"[:200])
    elif expected is str:
        if value not in choices:
            raise OptionError(f.name, f"{f.name} must be one of {', '.join(choices)}; got {value!r}"[:200])
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f.name, f"{f.name} must be a number; got {type(value).__name__}")
    elif expected is int and value != int(value):
        raise OptionError(f.name, f"{f.name} must be a whole number; got {value}")
    elif not lo <= value <= hi:
        raise OptionError(f.name, f"{f.name} must be in [{lo}, {hi}]; got {value}")


# ---------------------------------------------------------------- the one parser


def coerce(name: str, value: Any) -> Any:
    """A value as the option's type: an int is taken for a float option; bools are never
    numbers and nothing else is converted. Raises OptionError."""
    if name not in FIELDS:
        raise OptionError(name, f"unknown decoding option {name!r}")
    expected = TYPES[name]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise OptionError(name, f"decoding option {name!r} must be {expected.__name__}; "
                                f"got {type(value).__name__}")
    return value


def apply(base: DecodeConfig, changes: Mapping[str, Any]) -> DecodeConfig:
    """`base` with `changes`; raises OptionError for the first option that is unknown, of the
    wrong type or out of range."""
    values = {name: coerce(name, changes[name]) for name in sorted(changes)}
    return sampling_drops_inherited_lossless(base.replace(**values), values)


def sampling_drops_inherited_lossless(config: DecodeConfig, given: Mapping[str, Any]) -> DecodeConfig:
    """The lossless mode decodes greedily. When it comes from the base (a model's default) and
    the options given ask to sample (temperature > 0), the threshold mode runs instead of a
    refusal; lossless named together with a temperature is still refused by the engine."""
    if config.lossless and config.temperature > 0 and "lossless" not in given:
        return config.replace(lossless=False)
    return config


def check_each(changes: Mapping[str, Any], base: DecodeConfig | None = None) -> tuple[dict[str, Any], list[str]]:
    """Each option checked on its own against `base`: (the usable ones, a line per bad one)."""
    base = base or DecodeConfig()
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in changes.items():
        try:
            kept[name] = apply(base, {name: value}).to_dict()[name]
        except OptionError as exc:
            problems.append(f"{name}: {exc}")
    return kept, problems


def parse_text(name: str, text: str) -> Any:
    """An option's value from text ("0.7", "off", "dual"); raises OptionError."""
    if name not in FIELDS:
        raise OptionError(name, f"{name}: not a decoding option; known: {', '.join(FIELDS)}")
    kind, text = TYPES[name], text.strip()
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise OptionError(name, f"{name}: {text!r} is not true/false")
    try:
        value = kind(text)
    except ValueError:
        raise OptionError(name, f"{name}: {text!r} is not a {kind.__name__}") from None
    _check(FIELDS[name], value)
    return value


# ---------------------------------------------------------------- command-line flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A --flag per option (--block-size, --kv-shift/--no-kv-shift, ...). A flag left out parses
    to None, so that the model family's published defaults can apply under the ones given; a
    command that loads a model picks the engine itself when --engine is left out (cli.pick_engine)."""
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        # argparse %-formats help text: a literal % must be doubled
        kind, help = TYPES[name], f"{f.metadata['help']} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.metadata["choices"]:
            parser.add_argument(flag, choices=f.metadata["choices"], default=None, help=help)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help)


def given_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The options a command line set: {name: value} for each flag given."""
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}


def from_arguments(args: argparse.Namespace, base: DecodeConfig | None = None) -> DecodeConfig:
    """`base` (DecodeConfig's defaults when None) with the options the flags set, as `apply`
    sets a request's; raises OptionError."""
    return apply(base or DecodeConfig(), given_arguments(args))
