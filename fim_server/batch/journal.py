"""Durable state of a job: the resume journal and atomic file writes.

The journal is an append-only JSONL file, one line per finished hole:
    {"key": <request hash>, "text": <fill>, "stats": {...}}
Lines are written as holes finish, flushed and fsync'd, so a killed run loses at most the
batch in flight. The key hashes the exact request (prefix, suffix) together with the model and
decoding options, so a hole is reused only when the model would see exactly the same thing.
A torn last line (the process died mid-write) is ignored when the journal is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

TMP_TAG = ".fim-infill-tmp-"


def request_key(fingerprint: str, prefix: str, suffix: str) -> str:
    h = hashlib.sha256()
    for part in (fingerprint, prefix, suffix):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)     # length-prefixed: no ambiguity
    return h.hexdigest()


class Journal:
    def __init__(self, path: Optional[Path]):
        """path None: an in-memory journal (nothing survives the run)."""
        self.path = path
        self.entries: dict[str, dict] = {}
        self.torn = 0                   # unreadable lines found on load
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        with path.open("rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    self.torn += 1

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Optional[dict]:
        return self.entries.get(key)

    def record(self, entries: list[dict]) -> None:
        """Append finished holes and make them durable before returning."""
        if not entries:
            return
        for e in entries:
            self.entries[e["key"]] = e
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
        with self.path.open("ab") as f:
            if f.tell() and not _ends_with_newline(self.path):
                lines = b"\n" + lines          # after a torn line: start a fresh one
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def atomic_write(path: Path, data: bytes, mode: Optional[int] = None) -> None:
    """Write a temporary file next to `path`, fsync it, then rename it over `path`: readers see
    the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _default_mode() -> int:
    """What a plain open() would create: 0o666 less the umask (mkstemp makes 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path) -> int:
    """Temporary files a killed run left behind in a directory it writes to."""
    removed = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        if TMP_TAG in p.name and p.name.startswith(".") and p.is_file():
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
    return removed
