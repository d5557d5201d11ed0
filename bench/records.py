"""The run's JSONL file: the one record of a bench run, from which the report is rebuilt.

    {"type": "run", "suite": ..., "machine": ..., "models": ..., "versions": ..., "settings": [...], ...}
    {"type": "case", "setting": "diffusion threshold=0.7", "case_id": ..., "latency_ms": ..., ...}

A "run" line opens every invocation (a resumed run adds another); "case" lines are appended
and flushed as cases finish. A case is finished when a row for its (setting, case_id) has no
error; a re-run with the same --out skips those. A torn last line (the process was killed
mid-write) is ignored when reading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

FILE = "cases.jsonl"


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d: not JSON (a torn write?); ignored", path, n)
                continue
            if isinstance(record, dict) and record.get("type") in ("run", "case"):
                records.append(record)
    return records


def runs(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "run"]


def latest_cases(records: list[dict]) -> list[dict]:
    """One row per (setting, case_id): the last finished one, else the last attempt."""
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["type"] != "case":
            continue
        key = (r["setting"], r["case_id"])
        if not r.get("error") or key not in rows or rows[key].get("error"):
            rows[key] = r
    return list(rows.values())


def finished(records: list[dict]) -> set[tuple[str, str]]:
    return {(r["setting"], r["case_id"]) for r in records if r["type"] == "case" and not r.get("error")}


class Appender:
    """Appends records, one line each, flushed and fsync'd so a crash loses at most the line
    being written."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ends_cleanly(path)
        self._file = open(path, "a", encoding="utf-8")

    @staticmethod
    def _ends_cleanly(path: Path) -> None:
        # After a torn write, start the next record on a line of its own.
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with open(path, "ab") as g:
                        g.write(b"\n")

    def write(self, records: Iterator[dict] | list[dict]) -> None:
        for record in records:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
