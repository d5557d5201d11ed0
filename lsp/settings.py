"""The server's settings: one frozen dataclass, read from `initializationOptions` and
`workspace/didChangeConfiguration`.

The settings object a client sends (names are stable; editor clients rely on them):

    {
      "worker": {"address": "tcp://127.0.0.1:5555", "timeoutMs": 5000, "model": null, "arModel": null,
                 "threads": 0},
      "spawnWorker": true,
      "debounceMs": 0,
      "adaptiveDebounce": true,
      "maxLines": 8,
      "engine": {"max_tokens": 64, "threshold": 0.9},
      "enabled": {"*": true, "markdown": false}
    }

It may also be nested under "fim" (the section name), and dotted keys ("worker.address")
are read as nested ones; an empty array stands for an empty object (Neovim sends an empty Lua
table as `[]`). Every value is checked; a bad one is reported and its default used,
an unknown key is reported and ignored. Parsing never raises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from fim_server.wire.addresses import DEFAULT_ADDRESS
from fim_server.wire.options import DecodeConfig, check_each

SECTION = "fim"

# DecodeConfig fields the server decides itself, so a setting for them would be ignored
SERVER_DECIDED = ("single_line",)


@dataclass(frozen=True)
class Settings:
    worker_address: str = DEFAULT_ADDRESS   # worker.address: tcp://HOST:PORT or ipc://PATH
    worker_timeout_ms: int = 5000           # worker.timeoutMs: deadline of one completion request
    worker_model: str | None = None         # worker.model: checkpoint for a spawned worker (None: bundled)
    worker_ar_model: str | None = None      # worker.arModel: its AR verifier when engine.engine is
                                            # "speculative" (None: the bundled AR twin)
    worker_threads: int = 0                 # worker.threads: torch threads of a spawned worker (0: half the CPUs)
    spawn_worker: bool = True               # spawnWorker: start a worker when none answers (local addresses only)
    debounce_ms: int = 0                    # debounceMs: wait this long for the next keystroke before asking
                                            # (0: ask at once; editors debounce their requests themselves,
                                            # and a newer keystroke stops the worker's run between steps)
    adaptive_debounce: bool = True          # adaptiveDebounce: stretch the wait (if any) to the typing rhythm
    max_lines: int = 8                      # maxLines: cap on lines of a multi-line completion
    engine: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
                                            # engine: DecodeConfig overrides sent with every request
    enabled: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({"*": True}))
                                            # enabled: per language id; "*" is the default

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def enabled_for(self, language_id: str | None) -> bool:
        if language_id and language_id in self.enabled:
            return self.enabled[language_id]
        return self.enabled.get("*", True)

    @property
    def engine_kind(self) -> str | None:
        """The engine a spawned worker runs: as set, else None (the worker picks the one its
        model's family runs on, the block engine for the bundled model)."""
        value = self.engine.get("engine")
        return None if value is None else str(value)

    def to_wire(self) -> dict[str, Any]:
        """The settings under their client-side names (for fim/stats and logs)."""
        return {
            "worker": {"address": self.worker_address, "timeoutMs": self.worker_timeout_ms,
                       "model": self.worker_model, "arModel": self.worker_ar_model,
                       "threads": self.worker_threads},
            "spawnWorker": self.spawn_worker, "debounceMs": self.debounce_ms,
            "adaptiveDebounce": self.adaptive_debounce, "maxLines": self.max_lines,
            "engine": dict(self.engine), "enabled": dict(self.enabled),
        }


# ---------------------------------------------------------------- value checks
# Each check returns the value to store or raises ValueError with a short reason.


def _int_in(lo: int, hi: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"must be a whole number; got {value!r}"[:120])
        if not lo <= value <= hi:
            raise ValueError(f"must be in [{lo}, {hi}]; got {value}")
        return int(value)
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false; got {value!r}"[:120])
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("tcp://", "ipc://")) or len(value) > 1024:
        raise ValueError(f"must be a tcp://HOST:PORT or ipc://PATH address; got {value!r}"[:160])
    return value


def _optional_path(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise ValueError("must be a path or null")
    return value


def _engine(value: Any) -> tuple[Mapping[str, Any], list[str]]:
    """DecodeConfig overrides: each entry is checked on its own (options.check_each); bad ones
    are dropped with a line each."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a map of decoding options; got {type(value).__name__}")
    decided = [name for name in value if name in SERVER_DECIDED]
    kept, problems = check_each({k: v for k, v in value.items() if k not in SERVER_DECIDED})
    return MappingProxyType(kept), [f"engine.{name}: decided by the server from the cursor; ignored"
                                    for name in decided] + [f"engine.{p}; default used" for p in problems]


def _enabled(value: Any) -> Mapping[str, bool]:
    if isinstance(value, bool):
        return MappingProxyType({"*": value})
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in value.items()):
        raise ValueError("must be true/false or a map of language id to true/false")
    return MappingProxyType({"*": True, **value})


# setting path -> (dataclass field, check)
_FIELDS = {
    ("worker", "address"): ("worker_address", _address),
    ("worker", "timeoutMs"): ("worker_timeout_ms", _int_in(100, 600_000)),
    ("worker", "model"): ("worker_model", _optional_path),
    ("worker", "arModel"): ("worker_ar_model", _optional_path),
    ("worker", "threads"): ("worker_threads", _int_in(0, 256)),
    ("spawnWorker",): ("spawn_worker", _boolean),
    ("debounceMs",): ("debounce_ms", _int_in(0, 5000)),
    ("adaptiveDebounce",): ("adaptive_debounce", _boolean),
    ("maxLines",): ("max_lines", _int_in(1, 200)),
    ("enabled",): ("enabled", _enabled),
}


def _object(value: Any) -> Any:
    """[] -> {}: Lua has one table type and Neovim encodes an empty one as a JSON array, so an
    empty list is an empty object. No setting takes a list, so nothing else is lost."""
    return {} if isinstance(value, list) and not value else value


def _flatten(raw: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{"worker": {"address": x}} and {"worker.address": x} -> {("worker", "address"): x}.
    The engine map is a leaf: its keys are decoding options, checked by _engine."""
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in raw.items():
        name = path + tuple(str(key).split("."))
        value = _object(value)
        if name == ("worker",) and isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def parse_settings(raw: Any, defaults: Settings | None = None) -> tuple[Settings, list[str]]:
    """(settings, problems): `raw` over `defaults`; every problem is one line for the user."""
    settings = defaults or Settings()
    raw = _object(raw)
    if raw is None:
        return settings, []
    if isinstance(raw, dict) and isinstance(_object(raw.get(SECTION)), dict):
        raw = _object(raw[SECTION])
    if not isinstance(raw, dict):
        return settings, [f"settings must be an object; got {type(raw).__name__}: defaults used"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for path, value in _flatten(raw).items():
        name = ".".join(path)
        if path == ("engine",):
            try:
                changes["engine"], engine_problems = _engine(value)
                problems += engine_problems
            except ValueError as exc:
                problems.append(f"engine: {exc}; defaults used")
            continue
        if path not in _FIELDS:
            problems.append(f"{name}: unknown setting; ignored")
            continue
        attr, check = _FIELDS[path]
        try:
            changes[attr] = check(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}; default {_client_value(getattr(settings, attr))} used")
    return settings.replace(**changes), problems


def _client_value(value: Any) -> str:
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)
