"""The wire protocol between a client (the language server) and the worker.

Every frame is one msgpack map with two envelope keys, ``v`` (the protocol
version, an int) and ``t`` (the message type, a string), and the message's
fields flattened next to them::

    {"v": 1, "t": "infill", "id": "42", "prefix": "def f(", "suffix": ")", ...}

Messages are frozen dataclasses with keyword-only fields. ``encode`` turns one
into bytes; ``decode`` turns bytes back into one and raises nothing but
``ProtocolError`` whatever it is given.

Rules ``decode`` applies:

* frames over ``MAX_FRAME_BYTES`` are refused before unpacking (``too_large``);
* msgpack itself runs with size limits, so a hostile frame cannot make it
  allocate huge strings, arrays or maps;
* ``v`` missing or not ``PROTOCOL_VERSION``: ``bad_version``;
* ``t`` missing or unknown, a required field missing, a field of the wrong
  type (bools are never accepted as numbers): ``bad_request``;
* a string, options map or stats map over its limit: ``too_large``;
* unknown extra keys are IGNORED, so a peer may add optional fields without
  bumping the version. Fields that are present are always type-checked.

When a frame is a map carrying a usable ``id`` (a string of at most
``MAX_ID_CHARS``), the ``ProtocolError`` carries that id so the error reply can
be matched to its request.

This module must stay light: it imports neither zmq nor torch.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import msgpack

from .options import DecodeConfig, OptionError, apply

PROTOCOL_VERSION = 1

# Hard limits.
MAX_FRAME_BYTES = 4 * 1024 * 1024   # a whole encoded frame
MAX_TEXT_CHARS = 1_000_000          # prefix, suffix, response text (each)
MAX_ID_CHARS = 256                  # request ids, option names, short strings
MAX_KEY_CHARS = 1024                # doc_key
MAX_MESSAGE_CHARS = 16_384          # error message text
MAX_OPTIONS = 64                    # entries in InfillMsg.options
MAX_STATS_ENTRIES = 1024            # entries in a stats map
MAX_STATS_DEPTH = 8                 # nesting of maps/lists inside a stats map

# A lone surrogate (JSON lets an editor send "\ud800") is no character: msgpack cannot encode it.
# U+FFFD keeps position arithmetic: 1 code point, 1 UTF-16 unit, like the surrogate it replaces.
SURROGATE = re.compile("[\ud800-\udfff]")

# Limits handed to msgpack.unpackb (it also derives limits from the frame size).
_MAX_ARRAY_LEN = 65_536
_MAX_MAP_LEN = 4_096


class MsgType(str, enum.Enum):
    infill = "infill"        # client -> worker: complete the middle
    response = "response"    # worker -> client: the completion
    error = "error"          # worker -> client: the request failed
    cancel = "cancel"        # client -> worker: drop a request (by id or doc_key)
    health = "health"        # client -> worker: ask for stats
    stats = "stats"          # worker -> client: answer to health
    close = "close"          # client -> worker: a document was closed: stop its requests, free its caches


class ErrorCode(str, enum.Enum):
    bad_request = "bad_request"
    bad_version = "bad_version"
    too_large = "too_large"
    busy = "busy"
    deadline = "deadline"
    internal = "internal"
    unavailable = "unavailable"


# Codes for which sending the same request again later may succeed.
RETRYABLE_CODES = frozenset({ErrorCode.busy, ErrorCode.unavailable})


class ProtocolError(Exception):
    """A frame or request that cannot be served; ``id`` is the request id if known."""

    def __init__(self, code: ErrorCode, message: str, id: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.id = id


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class InfillMsg:
    id: str
    prefix: str
    suffix: str
    doc_key: str | None = None          # the document: a client's newer request for it supersedes the older
    options: dict[str, Any] = field(default_factory=dict)  # DecodeConfig overrides
    max_tokens: int | None = None
    single_line: bool | None = None
    timeout_ms: float | None = None     # time budget from when the worker receives it (relative:
                                        # a worker on a skewed clock still judges it right)
    engine: str | None = None


@dataclass(frozen=True, kw_only=True)
class ResponseMsg:
    id: str
    text: str
    stats: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


@dataclass(frozen=True, kw_only=True)
class ErrorMsg:
    id: str | None                      # None when the request id was not recoverable
    code: ErrorCode
    message: str
    retryable: bool = False


@dataclass(frozen=True, kw_only=True)
class CancelMsg:
    id: str | None = None               # cancel this request ...
    doc_key: str | None = None          # ... or every request of this client for this document


@dataclass(frozen=True, kw_only=True)
class HealthMsg:
    id: str


@dataclass(frozen=True, kw_only=True)
class StatsMsg:
    id: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CloseMsg:
    doc_key: str                        # this client's requests for it stop; what the worker cached for it goes


Msg = Union[InfillMsg, ResponseMsg, ErrorMsg, CancelMsg, HealthMsg, StatsMsg, CloseMsg]


# ---------------------------------------------------------------- field checks
#
# A checker takes (field name, wire value) and returns the value to store in
# the dataclass, or raises ProtocolError (without an id; decode adds it).


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.bad_request, message)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _string(limit: int, nonempty: bool = False) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _bad(f"field {name!r} must be a string; got {_type_name(value)}")
        if len(value) > limit:
            raise ProtocolError(ErrorCode.too_large,
                                f"field {name!r} has {len(value)} chars; the limit is {limit}")
        if nonempty and not value:
            raise _bad(f"field {name!r} must not be empty")
        return value
    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"field {name!r} must be a bool; got {_type_name(value)}")
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"field {name!r} must be an int; got {_type_name(value)}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"field {name!r} must be a number; got {_type_name(value)}")
    if not math.isfinite(value):
        raise _bad(f"field {name!r} must be finite; got {value}")
    return float(value)


def _error_code(name: str, value: Any) -> ErrorCode:
    if isinstance(value, ErrorCode):
        return value
    if isinstance(value, str):
        try:
            return ErrorCode(value)
        except ValueError:
            pass
    raise _bad(f"field {name!r} is not a known error code: {value!r}"[:300])


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def check_optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    return check_optional


def _options(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"field {name!r} must be a map; got {_type_name(value)}")
    if len(value) > MAX_OPTIONS:
        raise ProtocolError(ErrorCode.too_large,
                            f"field {name!r} has {len(value)} entries; the limit is {MAX_OPTIONS}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_ID_CHARS:
            raise _bad(f"field {name!r}: option names must be non-empty strings "
                       f"of at most {MAX_ID_CHARS} chars")
        if not isinstance(item, (bool, int, float, str)):
            raise _bad(f"option {key!r} must be a bool, int, float or string; "
                       f"got {_type_name(item)}")
        if isinstance(item, str) and len(item) > MAX_ID_CHARS:
            raise ProtocolError(ErrorCode.too_large, f"option {key!r} value is too long")
    return dict(value)


def _check_plain(name: str, value: Any, depth: int) -> None:
    """Stats values: None, bool, int, float, str, lists and str-keyed maps of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if depth >= MAX_STATS_DEPTH:
        raise _bad(f"field {name!r} is nested deeper than {MAX_STATS_DEPTH}")
    if isinstance(value, list):
        for item in value:
            _check_plain(name, item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(f"field {name!r}: map keys must be strings")
            _check_plain(name, item, depth + 1)
        return
    raise _bad(f"field {name!r} holds a {_type_name(value)}, which is not plain data")


def _stats(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"field {name!r} must be a map; got {_type_name(value)}")
    if len(value) > MAX_STATS_ENTRIES:
        raise ProtocolError(ErrorCode.too_large,
                            f"field {name!r} has {len(value)} entries; the limit is {MAX_STATS_ENTRIES}")
    _check_plain(name, value, 0)
    return dict(value)


_ID = _string(MAX_ID_CHARS, nonempty=True)
_KEY = _string(MAX_KEY_CHARS, nonempty=True)
_TEXT = _string(MAX_TEXT_CHARS)
_SHORT = _string(MAX_ID_CHARS)

# For each type: its class and, per field, (checker, required). A field that is
# not required may be missing from the frame (the dataclass default is used).
_SPECS: dict[MsgType, tuple[type, dict[str, tuple[Callable[[str, Any], Any], bool]]]] = {
    MsgType.infill: (InfillMsg, {
        "id": (_ID, True),
        "prefix": (_TEXT, True),
        "suffix": (_TEXT, True),
        "doc_key": (_optional(_KEY), False),
        "options": (_options, False),
        "max_tokens": (_optional(_integer), False),
        "single_line": (_optional(_boolean), False),
        "timeout_ms": (_optional(_number), False),
        "engine": (_optional(_SHORT), False),
    }),
    MsgType.response: (ResponseMsg, {
        "id": (_ID, True),
        "text": (_TEXT, True),
        "stats": (_stats, False),
        "cancelled": (_boolean, False),
    }),
    MsgType.error: (ErrorMsg, {
        "id": (_optional(_ID), True),
        "code": (_error_code, True),
        "message": (_string(MAX_MESSAGE_CHARS), True),
        "retryable": (_boolean, False),
    }),
    MsgType.cancel: (CancelMsg, {
        "id": (_optional(_ID), False),
        "doc_key": (_optional(_KEY), False),
    }),
    MsgType.health: (HealthMsg, {
        "id": (_ID, True),
    }),
    MsgType.stats: (StatsMsg, {
        "id": (_ID, True),
        "stats": (_stats, False),
    }),
    MsgType.close: (CloseMsg, {
        "doc_key": (_KEY, True),
    }),
}

_TYPE_OF_CLASS = {cls: t for t, (cls, _) in _SPECS.items()}


def _build(msg_type: MsgType, fields: dict[str, Any]) -> Msg:
    """Check the fields of one message (a wire map) and construct it."""
    cls, spec = _SPECS[msg_type]
    values: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in fields:
            if required:
                raise _bad(f"{msg_type.value} message is missing field {name!r}")
            continue
        values[name] = check(name, fields[name])
    if msg_type is MsgType.cancel and values.get("id") is None and values.get("doc_key") is None:
        raise _bad("cancel message needs an id or a doc_key")
    return cls(**values)


# ---------------------------------------------------------------- encode / decode


def encode(msg: Msg) -> bytes:
    """One message as a msgpack frame.

    Raises TypeError if ``msg`` is not a message, and ProtocolError if it breaks
    a limit or a field has the wrong type, so that whatever ``encode`` returns,
    ``decode`` accepts.
    """
    msg_type = _TYPE_OF_CLASS.get(type(msg))
    if msg_type is None:
        raise TypeError(f"not a protocol message: {_type_name(msg)}")
    fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    msg_id = fields.get("id") if isinstance(fields.get("id"), str) else None
    if isinstance(fields.get("code"), ErrorCode):
        fields["code"] = fields["code"].value
    try:
        _build(msg_type, fields)
    except ProtocolError as exc:
        exc.id = msg_id
        raise
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "t": msg_type.value, **fields}, use_bin_type=True)
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.too_large,
                            f"frame is {len(frame)} bytes; the limit is {MAX_FRAME_BYTES}", msg_id)
    return frame


def decode(data: Any) -> Msg:
    """One message from a frame (bytes or any buffer). Raises only ProtocolError."""
    try:
        view = memoryview(data)
    except TypeError:
        raise ProtocolError(ErrorCode.bad_request,
                            f"frame must be bytes; got {_type_name(data)}") from None
    if view.nbytes > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.too_large,
                            f"frame is {view.nbytes} bytes; the limit is {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(
            view, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_FRAME_BYTES, max_bin_len=MAX_FRAME_BYTES,
            max_array_len=_MAX_ARRAY_LEN, max_map_len=_MAX_MAP_LEN, max_ext_len=0,
        )
    except Exception as exc:  # truncated, malformed, over a limit, bad UTF-8, ...
        raise ProtocolError(ErrorCode.bad_request,
                            f"frame is not valid msgpack ({_type_name(exc)})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.bad_request,
                            f"frame must be a msgpack map; got {_type_name(obj)}")

    msg_id = obj.get("id")
    if not (isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_ID_CHARS):
        msg_id = None

    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.bad_version,
                            f"protocol version must be {PROTOCOL_VERSION}; got {version!r}"[:300],
                            msg_id)
    type_name = obj.get("t")
    try:
        if not isinstance(type_name, str):
            raise ValueError(type_name)
        msg_type = MsgType(type_name)
    except ValueError:
        raise ProtocolError(ErrorCode.bad_request,
                            f"unknown message type {type_name!r}"[:300], msg_id) from None
    try:
        return _build(msg_type, obj)
    except ProtocolError as exc:
        exc.id = msg_id
        raise
    except Exception as exc:  # a bug in a checker must still not escape as anything else
        raise ProtocolError(ErrorCode.bad_request,
                            f"invalid {msg_type.value} message ({_type_name(exc)})", msg_id) from None


# ---------------------------------------------------------------- helpers


def request_config(msg: InfillMsg, base: DecodeConfig) -> DecodeConfig:
    """``base`` with the request's options, then max_tokens/single_line/engine, applied.

    The explicit fields win over the same names in ``options``. Checked by the one
    option parser (options.apply); raises ProtocolError(bad_request) naming the
    offending option.
    """
    changes = dict(msg.options)
    for name in ("max_tokens", "single_line", "engine"):
        value = getattr(msg, name)
        if value is not None:
            changes[name] = value
    try:
        return apply(base, changes)
    except OptionError as exc:
        raise ProtocolError(ErrorCode.bad_request, f"bad decoding option: {exc}", msg.id) from None


def encodable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, so that it can go on the wire."""
    return SURROGATE.sub("\ufffd", text)


def error_from(exc: ProtocolError, id: str | None = None) -> ErrorMsg:
    """The error reply for ``exc``; ``id`` (when given) overrides ``exc.id``."""
    return ErrorMsg(
        id=id if id is not None else exc.id,
        code=exc.code,
        message=exc.message[:MAX_MESSAGE_CHARS],
        retryable=exc.code in RETRYABLE_CODES,
    )
