"""Batch infilling: every hole in a tree of files (or a JSONL of tasks), batched through an engine,
locally or on a Ray cluster (ray_runner), with a resume journal and atomic writes.

    holes (find, fill) -> inputs (scan files, tasks) -> run (batches, journal) -> outputs (files, diff, JSONL)
    command: `fim-server infill` around all of it
"""

from .holes import MARKER, Hole, context, fill, find_holes
from .command import fingerprint, infill
from .run import InfillOptions, LocalRunner, run_batch

__all__ = ["MARKER", "Hole", "find_holes", "context", "fill", "InfillOptions", "LocalRunner",
           "run_batch", "infill", "fingerprint"]
