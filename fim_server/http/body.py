"""Reading a request body: its size, its JSON, and typed fields.

Whatever a client sends, these raise nothing but HttpError (a 4xx with a message that names the
field); unknown fields are never looked at, so they are ignored. A JSON null is an absent field.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from aiohttp import web

from fim_server.wire.protocol import MAX_TEXT_CHARS


class HttpError(Exception):
    """An answer other than 200: its status, a message, and llama.cpp/OpenAI's error type."""

    def __init__(self, status: int, message: str, kind: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or ("invalid_request_error" if status < 500 else
                             "unavailable_error" if status == 503 else "server_error")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `limit` bytes, 400 for anything but an object."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"the body is {request.content_length} bytes; the limit is {limit}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, f"the body is larger than {limit} bytes") from None
    return parse_json(raw)


def parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise HttpError(400, "the body is empty; expected a JSON object")
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:       # bad JSON, bad UTF-8, absurd nesting or numbers
        raise HttpError(400, f"the body is not valid JSON: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise HttpError(400, f"the body must be a JSON object; got {json_type(obj)}")
    return obj


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class Fields:
    """Typed access to one JSON object's fields; `where` prefixes field names in messages."""

    def __init__(self, obj: dict[str, Any], where: str = ""):
        self.obj = obj
        self.where = where

    def _get(self, name: str) -> Any:
        return self.obj.get(name)

    def _bad(self, name: str, expected: str, value: Any) -> HttpError:
        return HttpError(400, f"field '{self.where}{name}' must be {expected}; got {json_type(value)}")

    def has(self, name: str) -> bool:
        return self._get(name) is not None

    def text(self, name: str, default: Optional[str] = None, limit: int = MAX_TEXT_CHARS) -> Optional[str]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(name, "a string", value)
        if len(value) > limit:
            raise HttpError(413, f"field '{self.where}{name}' has {len(value)} characters; the limit is {limit}")
        return value

    def integer(self, name: str, default: Optional[int] = None) -> Optional[int]:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, "a whole number", value)
        return value

    def number(self, name: str, default: Optional[float] = None) -> Optional[float]:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(name, "a number", value)
        return value

    def boolean(self, name: str, default: Optional[bool] = None) -> Optional[bool]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "true or false", value)
        return value

    def strings(self, name: str) -> list[str]:
        """A string or a list of strings (OpenAI's `stop`); [] when absent."""
        value = self._get(name)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a string or a list of strings", value)
        return list(value)

    def array(self, name: str) -> list[Any]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(name, "an array", value)
        return value

    def object(self, name: str) -> "Fields":
        value = self._get(name)
        if value is None:
            return Fields({}, f"{self.where}{name}.")
        if not isinstance(value, dict):
            raise self._bad(name, "an object", value)
        return Fields(value, f"{self.where}{name}.")
