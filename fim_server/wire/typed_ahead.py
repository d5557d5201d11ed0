"""Answer a keystroke from the previous completion of the same document.

When the user types the first characters of the completion already on screen, the new
request's prefix is the old prefix plus those characters and its suffix is unchanged. The
rest of the old completion is then the natural answer, and no model call is needed. Both ends
of the wire keep one of these stores: the language server (per document URI, the text it
showed) and the worker (per doc_key and decoding options, the text it answered).

This is reuse of the previous *result*, not of the model's key/value tensors: the answer
costs no forward pass. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from fim_server.lru import LRU


@dataclass(frozen=True)
class Shown:
    prefix: str                 # the context the completion was made for
    suffix: str
    text: str                   # the completion, still untyped
    tag: Any = None             # what else must match (the worker: the decoding options)
    offset: Optional[int] = None    # the cursor's offset in the document, when the caller knows it


class TypedAhead:
    """The last completion per key, least recently used out past `capacity`."""

    def __init__(self, capacity: int = 1024):
        self._shown: LRU[str, Shown] = LRU(capacity)

    def remember(self, key: str, prefix: str, suffix: str, text: str, tag: Any = None,
                 offset: Optional[int] = None) -> None:
        if not text:
            self._shown.pop(key)        # nothing left to offer
            return
        self._shown.put(key, Shown(prefix, suffix, text, tag, offset))

    def forget(self, key: str) -> None:
        self._shown.pop(key)

    def lookup(self, key: str, prefix: str, suffix: str, tag: Any = None,
               offset: Optional[int] = None) -> Optional[str]:
        """The rest of the previous completion when, since it was made, the user only typed its
        first characters: same suffix and tag, and the prefix is the old one plus those
        characters. With offsets (the cursor's position in the document) the two prefixes may be
        windows cut at different starts: their overlapping tails must agree. A hit becomes the
        new entry, so the next keystroke is served the same way."""
        old = self._shown.get(key)
        if old is None or old.suffix != suffix or old.tag != tag:
            return None
        if offset is not None and old.offset is not None:
            typed_len = offset - old.offset
        elif prefix.startswith(old.prefix):
            typed_len = len(prefix) - len(old.prefix)
        else:
            return None
        # typed_len == 0 is the same request again (recompute: the client asked for a reason);
        # typing the whole completion leaves nothing to offer
        if not 0 < typed_len < len(old.text) or not prefix.endswith(old.text[:typed_len]):
            return None
        before = prefix[:len(prefix) - typed_len]
        common = min(len(before), len(old.prefix))
        if before[len(before) - common:] != old.prefix[len(old.prefix) - common:]:
            return None
        rest = old.text[typed_len:]
        self.remember(key, prefix, suffix, rest, tag, offset)
        return rest
