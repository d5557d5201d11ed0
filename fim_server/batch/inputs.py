"""What to fill: source files with holes (found under the given paths) and JSONL tasks.

Nothing here raises on bad input: a file or task line that cannot be used becomes a Problem
with a one-line message, and the rest of the job goes on.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .holes import Hole, find_holes

SKIP_DIRS = {"__pycache__", "node_modules"}     # besides hidden directories (.git, .venv, ...)
BINARY = "binary file (contains NUL bytes)"
SNIFF_BYTES = 8000              # how much of an over-size file is read to tell binary (as git does)


@dataclass(frozen=True)
class Problem:
    where: str          # a path, or path:line for a task line
    message: str

    def to_dict(self) -> dict:
        return {"where": self.where, "message": self.message}


@dataclass
class SourceFile:
    path: Path          # where it was read
    rel: str            # path relative to the common root of the inputs ('/' separators)
    text: str
    holes: list[Hole]
    mode: int           # permission bits, kept when the file is rewritten


@dataclass(frozen=True)
class Task:
    id: str
    prefix: str
    suffix: str


@dataclass
class Inputs:
    files: list[SourceFile] = field(default_factory=list)       # files with at least one hole
    tasks: list[Task] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    scanned: int = 0                                             # text files read
    skipped_binary: int = 0                                      # binary files found in directories
    root: Optional[Path] = None                                  # common root of the path arguments


def common_root(paths: list[Path]) -> Path:
    """Output paths are relative to this: the deepest directory holding every existing input."""
    dirs = [os.path.abspath(p if p.is_dir() else p.parent) for p in paths if p.exists() or p.is_symlink()]
    return Path(os.path.commonpath(dirs)) if dirs else Path.cwd()


def walk(paths: list[Path], exclude: Iterable[Path]) -> Iterator[tuple[Path, Optional[str]]]:
    """(path, None) for each file under the arguments, sorted; (path, message) for a bad argument."""
    excluded = {p.resolve() for p in exclude}
    for arg in paths:
        if arg.is_dir():
            for top, dirs, names in os.walk(arg):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                                 and (Path(top) / d).resolve() not in excluded)
                for name in sorted(names):
                    yield Path(top) / name, None
        elif arg.exists() and not arg.is_file():
            yield arg, "not a regular file"
        elif arg.exists() or arg.is_symlink():
            yield arg, None
        else:
            yield arg, "does not exist"


def read_source(path: Path, max_bytes: int) -> tuple[Optional[str], Optional[str]]:
    """(text, None) or (None, why it cannot be used)."""
    try:
        st = path.stat()                  # follows links: a dangling one is unreadable
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        size = st.st_size
        with path.open("rb") as handle:
            # an over-size file is only sniffed: a large image is binary, not too large
            data = handle.read(SNIFF_BYTES) if size > max_bytes else handle.read()
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    if b"\x00" in data:
        return None, BINARY
    if size > max_bytes:
        return None, f"too large: {size} bytes (limit {max_bytes}, --max-file-bytes)"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"


def scan(paths: list[Path], marker: str, max_bytes: int, exclude: Iterable[Path] = ()) -> Inputs:
    """Binary files found in a directory are skipped and counted, as black and ripgrep do (a
    tree's images and .pyc files are not source); one named on the command line is a problem."""
    inputs = Inputs(root=common_root(paths) if paths else None)
    named = {p.resolve() for p in paths if not p.is_dir()}
    seen: set[Path] = set()
    for path, bad in walk(paths, exclude):
        if bad is None and path.resolve() in seen:
            continue            # named twice (a file and its directory)
        seen.add(path.resolve())
        text, bad = (None, bad) if bad else read_source(path, max_bytes)
        if text is None and bad == BINARY and path.resolve() not in named:
            inputs.skipped_binary += 1
            continue
        if text is None:
            inputs.problems.append(Problem(str(path), bad))
            continue
        inputs.scanned += 1
        holes = find_holes(text, marker)
        if holes:
            rel = os.path.relpath(path, inputs.root).replace(os.sep, "/")
            inputs.files.append(SourceFile(path, rel, text, holes, path.stat().st_mode & 0o7777))
    return inputs


def load_tasks(path: Path, max_bytes: int) -> tuple[list[Task], list[Problem]]:
    """JSONL lines {"id", "prefix", "suffix"}; "suffix" may be left out (empty)."""
    tasks, problems, ids = [], [], set()
    try:
        handle = path.open("rb")
    except OSError as exc:
        return [], [Problem(str(path), f"unreadable: {exc.strerror or exc}")]
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            task, bad = parse_task(raw, max_bytes)
            if task is not None and task.id in ids:
                task, bad = None, f"duplicate task id {task.id!r}"
            if task is None:
                problems.append(Problem(where, bad))
                continue
            ids.add(task.id)
            tasks.append(task)
    return tasks, problems


def parse_task(raw: bytes, max_bytes: int) -> tuple[Optional[Task], Optional[str]]:
    if len(raw) > max_bytes:
        return None, f"task too large: {len(raw)} bytes (limit {max_bytes}, --max-file-bytes)"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(obj, dict):
        return None, "a task must be a JSON object {id, prefix, suffix}"
    task_id, prefix, suffix = obj.get("id"), obj.get("prefix"), obj.get("suffix", "")
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or task_id == "":
        return None, "task needs an \"id\" (string or integer)"
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        return None, "task \"prefix\" and \"suffix\" must be strings"
    return Task(str(task_id), prefix, suffix), None
