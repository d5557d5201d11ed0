"""SantaCoder-FIM single-line tasks (the parquet Qwen2.5-Coder evaluates on), Python subset.

Columns: name, language ("py" | "js" | "java"), prompt (the prefix), suffix,
canonical_solution (the missing line), tests. Scored as Qwen2.5-Coder scores it: exact match
of the first non-blank line (`bench.metrics.first_line_exact_match`).
"""

from __future__ import annotations

from pathlib import Path

from bench.cases import FimCase

SUITE = "santacoder-fim"
COLUMNS = ("name", "language", "prompt", "suffix", "canonical_solution")


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading SantaCoder-FIM needs pyarrow: pip install 'fim-server[bench]'") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:      # pyarrow's errors derive from these
        raise ValueError(f"{path}: cannot read it as parquet ({exc})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not SantaCoder-FIM data (missing columns {', '.join(missing)})")
    return table.select(list(COLUMNS)).to_pylist()


def load_santacoder(path: str | Path, language: str = "py") -> list[FimCase]:
    """The `language` tasks of the parquet at `path` (or of train.parquet in that directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "train.parquet"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (want SantaCoder-FIM's train.parquet)")
    return [
        FimCase(id=row["name"], prefix=row["prompt"], suffix=row["suffix"], middle=row["canonical_solution"],
                test=None, entry_point=None, suite=SUITE, kind="single-line")
        for row in _read_parquet(path) if row["language"] == language
    ]
