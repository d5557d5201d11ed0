"""The default source tree of the `repo` and `structure` suites: real Python projects from PyPI,
pinned to exact versions, none of them in the bundled models' training data (the models saw
only the CPython standard library; these projects are not part of it and are not vendored by it).

They are installed once, without dependencies, as wheels, into a cache directory
(`$FIM_BENCH_CACHE`, default ~/.cache/fim-bench) that the suites then sample from. The install
goes to a temporary directory that is renamed into place only when pip succeeded, so an
interrupted install is never sampled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Pure-Python projects with ordinary library code (no generated data tables).
PINNED = (
    ("attrs", "26.1.0"),
    ("click", "8.5.1"),
    ("more-itertools", "11.2.1"),
    ("packaging", "26.3"),
)
PIP_TIMEOUT_S = 600


def cache_root() -> Path:
    return Path(os.environ.get("FIM_BENCH_CACHE") or Path.home() / ".cache" / "fim-bench")


def requirements(pins=PINNED) -> list[str]:
    return [f"{name}=={version}" for name, version in pins]


def pinned_dir(pins=PINNED, root: Path | None = None) -> Path:
    """Where this pin set lives: named by a hash of the pins, so changing them installs afresh."""
    digest = hashlib.sha256("\n".join(requirements(pins)).encode()).hexdigest()[:12]
    return (root or cache_root()) / f"pypi-{digest}"


def ensure_pinned(pins=PINNED, root: Path | None = None) -> Path:
    """The directory holding the pinned projects, installing them with pip if needed."""
    target = pinned_dir(pins, root)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=target.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary", ":all:",
           "--no-compile", "--target", str(staging), *requirements(pins)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"installing the pinned projects failed ({' '.join(requirements(pins))}):\n"
                               f"{done.stderr[-2000:]}\nGive a source tree with --repo DIR instead.")
        (staging / "PINNED.txt").write_text("\n".join(requirements(pins)) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():        # else another run installed it first: use that
                raise
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip did not finish within {PIP_TIMEOUT_S} s; give a source tree with --repo DIR") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
