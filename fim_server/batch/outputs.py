"""Where fills go: files (in place or under an output directory), a unified diff, per-hole
JSONL records, and the summary (printed, and kept as JSON in the state directory)."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Iterator, Optional, TextIO

from .journal import atomic_write
from .run import FAILED, InfillOptions, Unit


class FileWriter:
    """Called as each file's holes are all settled: writes it at once, atomically."""

    def __init__(self, options: InfillOptions):
        self.options = options
        self.written: list[str] = []
        self.untouched: list[str] = []      # every hole failed: the file is left as it is

    def __call__(self, unit: Unit) -> None:
        if unit.source is None or not (self.options.in_place or self.options.out_dir):
            return
        if all(s == FAILED for s in unit.status):
            self.untouched.append(unit.name)
            return
        data = unit.filled_text().encode("utf-8")
        if self.options.in_place:
            atomic_write(unit.source.path, data, unit.source.mode)
        if self.options.out_dir is not None:
            atomic_write(self.options.out_dir / unit.source.rel, data, unit.source.mode)
        self.written.append(unit.name)


def unified_diff(units: list[Unit]) -> str:
    """git-style a/ b/ diff of every file that changed, in path order."""
    out = []
    for unit in sorted((u for u in units if u.source is not None), key=lambda u: u.name):
        old, new = unit.source.text, unit.filled_text()
        if old == new:
            continue
        lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                     f"a/{unit.name}", f"b/{unit.name}")
        for line in lines:
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def hole_records(units: list[Unit]) -> Iterator[dict]:
    """One record per hole: where it is, what happened, the fill and the engine's stats."""
    for unit in units:
        for k in range(unit.n_holes):
            record = {"id": unit.name if unit.task else f"{unit.name}#{k}", "status": unit.status[k],
                      "completion": unit.fills[k], "message": unit.messages[k], "stats": unit.stats[k]}
            if unit.source is not None:
                h = unit.source.holes[k]
                record.update(path=unit.name, hole=k, line=h.line, column=h.column)
            yield record


def emit(target: Optional[str], text: str) -> None:
    """Write text to a path (atomically) or to stdout ("-")."""
    if target is None:
        return
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write(Path(target), text.encode("utf-8"))


def hole_messages(units: list[Unit]) -> list[dict]:
    return [{"where": u.where(k), "status": u.status[k], "message": u.messages[k]}
            for u in units for k in range(u.n_holes) if u.messages[k]]


def print_summary(summary: dict, stream: TextIO = sys.stderr, limit: int = 20) -> None:
    h = summary["holes"]
    print(f"infill: {h['filled']} filled, {h['skipped']} skipped (finished earlier, from the journal), "
          f"{h['failed']} failed of {h['total']} holes in {summary['time_s']:.1f} s "
          f"({summary['holes_per_s']:.2f} holes/s); {h['truncated']} with truncated context", file=stream)
    f = summary["files"]
    print(f"files: {f['scanned']} read, {f['with_holes']} with holes, {f['written']} written, "
          f"{f['skipped_binary']} binary skipped; "
          f"tasks: {summary['tasks']}; bad inputs: {summary['bad_inputs']}", file=stream)
    notes = summary["problems"] + summary["hole_messages"]
    for n in notes[:limit]:
        print(f"  {n['where']}: {n['message']}", file=stream)
    if len(notes) > limit:
        print(f"  ... {len(notes) - limit} more in the summary JSON", file=stream)
    if summary.get("summary_path"):
        print(f"summary: {summary['summary_path']}", file=stream)


def count(units: list[Unit], status: str) -> int:
    return sum(s == status for u in units for s in u.status)


def truncated(units: list[Unit]) -> int:
    return sum(bool(s and s.get("truncated")) for u in units for s in u.stats)

