"""Answer a keystroke from the previous completion of the same document.

When the user types the first characters of the completion that is already on screen, the
new request's prefix is the old prefix plus those characters and its suffix is unchanged.
The rest of the old completion is then the natural answer, and no model call is needed.

This is reuse of the previous *result*, not of the model's key/value tensors: the answer
costs no forward pass (nfe 0) and the worker reports it as reused, never as computed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from .config import DecodeConfig


@dataclass(frozen=True)
class _Entry:
    prefix: str
    suffix: str
    config: DecodeConfig
    text: str


class ReuseCache:
    """The last (prefix, suffix, config, completion) per doc_key, least recently used out."""

    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()    # the compute thread remembers, the socket thread looks up

    def remember(self, doc_key: str, prefix: str, suffix: str, config: DecodeConfig, text: str) -> None:
        with self._lock:
            if not text:
                self._entries.pop(doc_key, None)    # nothing left to offer
                return
            self._entries[doc_key] = _Entry(prefix, suffix, config, text)
            self._entries.move_to_end(doc_key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, doc_key: str) -> None:
        with self._lock:
            self._entries.pop(doc_key, None)

    def lookup(self, doc_key: str, prefix: str, suffix: str, config: DecodeConfig) -> Optional[str]:
        """The rest of the previous completion if the new prefix only adds typed characters
        that start it (suffix and options unchanged); None otherwise. A hit becomes the new
        entry, so the next keystroke can be served the same way."""
        with self._lock:
            old = self._entries.get(doc_key)
        if old is None or old.suffix != suffix or old.config != config:
            return None
        if not prefix.startswith(old.prefix):
            return None
        typed = prefix[len(old.prefix):]
        # typed == "" is the same request again (recompute: the client asked for a reason);
        # typing the whole completion leaves nothing to offer
        if not typed or len(typed) >= len(old.text) or not old.text.startswith(typed):
            return None
        rest = old.text[len(typed):]
        self.remember(doc_key, prefix, suffix, config, rest)
        return rest
