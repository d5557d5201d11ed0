"""Settings: one engine plus the per-request decoding options it is run with.

`--sweep threshold=0.5,0.7,0.9 --sweep block_size=8,32` gives every combination, for each
engine the option applies to: the diffusion options (threshold, block size, cache, unmask
rule, early commit, ...) to `diffusion` and `speculative` (they shape its draft), the draft
options to `speculative` only, the common ones (max_tokens, temperature, ...) to all. The AR
baseline takes none of the diffusion options, so it is one setting. Options travel in each
request's `options` map, exactly as an editor's would.

`--setting "diffusion early_commit=0.5"` (repeatable) names settings one by one instead, for
comparing modes that are not a grid: plain diffusion, early commit, the EB rule, speculative.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from fim_server.wire.options import ENGINES, FIELDS, DecodeConfig, OptionError, parse_text

COMMON = {"max_tokens", "temperature", "seed", "context_tokens", "kv_reuse", "single_line", "repetition_guard"}
SPECULATIVE_ONLY = {"draft_length", "draft_steps"}
NOT_SWEPT = {"engine"}
DIFFUSION = set(FIELDS) - COMMON - SPECULATIVE_ONLY - NOT_SWEPT


def applies(option: str, engine: str) -> bool:
    if option in COMMON:
        return True
    if engine == "ar":
        return False
    return option in DIFFUSION or (engine == "speculative" and option in SPECULATIVE_ONLY)


@dataclass(frozen=True)
class Setting:
    engine: str
    options: tuple[tuple[str, Any], ...] = ()      # swept options, in the order given

    @property
    def name(self) -> str:
        return " ".join([self.engine, *(f"{k}={_show(v)}" for k, v in self.options)])

    def request_options(self, base: dict[str, Any]) -> dict[str, Any]:
        return {**base, **dict(self.options)}


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _option(raw: str, flag: str) -> str:
    """A decoding option's field name ("kv-shift" -> "kv_shift"), or ValueError naming the flag."""
    option = raw.strip().replace("-", "_")
    if option not in FIELDS or option in NOT_SWEPT:
        known = ", ".join(sorted(set(FIELDS) - NOT_SWEPT))
        raise ValueError(f"{flag} {option}: not a decoding option; known: {known}")
    return option


def _parse_value(option: str, text: str, flag: str) -> Any:
    try:
        return parse_text(option, text)
    except OptionError as exc:
        raise ValueError(f"{flag} {exc}") from None


def parse_sweep(specs: list[str], flag: str = "--sweep") -> dict[str, list[Any]]:
    """["threshold=0.5,0.9", "cache=none,dual"] -> {"threshold": [0.5, 0.9], "cache": ["none", "dual"]};
    errors name `flag` (bench.model_eval's --set parses its OPTION=VALUE pairs here too)."""
    sweep: dict[str, list[Any]] = {}
    for spec in specs:
        raw, sep, values = spec.partition("=")
        if not sep or not values.strip():
            raise ValueError(f"{flag} {spec!r}: write OPTION=VALUE,VALUE,...")
        option = _option(raw, flag)
        if option in sweep:
            raise ValueError(f"{flag} {option} given twice")
        sweep[option] = [_parse_value(option, v, flag) for v in values.split(",") if v.strip()]
    return sweep


def build_settings(engines: list[str], sweep: dict[str, list[Any]], base: dict[str, Any]) -> list[Setting]:
    """Every engine x every combination of the swept options that apply to it; each one is
    checked by building its DecodeConfig, so a bad value fails before any worker starts."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(f"--engines: {', '.join(unknown) or 'none given'}; known: {', '.join(ENGINES)}")
    settings = []
    for engine in dict.fromkeys(engines):
        options = [k for k in sweep if applies(k, engine)]
        for values in itertools.product(*(sweep[k] for k in options)):
            setting = Setting(engine, tuple(zip(options, values)))
            DecodeConfig(engine=engine).replace(**setting.request_options(base))   # raises ValueError
            settings.append(setting)
    return settings


def parse_setting(spec: str, base: dict[str, Any]) -> Setting:
    """"diffusion unmask=eb eb_gamma=0.3" -> Setting("diffusion", (("unmask", "eb"), ("eb_gamma", 0.3)))"""
    engine, *pairs = spec.split()
    if engine not in ENGINES:
        raise ValueError(f"--setting {spec!r}: starts with an engine; known: {', '.join(ENGINES)}")
    options = []
    flag = f"--setting {spec!r}:"
    for pair in pairs:
        raw, sep, text = pair.partition("=")
        if not sep or not text:
            raise ValueError(f"{flag} write ENGINE OPTION=VALUE ...")
        option = _option(raw, flag)
        if not applies(option, engine):
            raise ValueError(f"{flag} {option} does not apply to the {engine} engine")
        options.append((option, _parse_value(option, text, flag)))
    setting = Setting(engine, tuple(options))
    DecodeConfig(engine=engine).replace(**setting.request_options(base))   # raises ValueError
    return setting


def parse_settings(specs: list[str], base: dict[str, Any]) -> list[Setting]:
    settings = [parse_setting(spec, base) for spec in specs]
    names = [s.name for s in settings]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--setting {twice[0]!r} given twice")
    return settings
