"""More training code: the Python sources of permissively licensed packages from PyPI.

`fetch` runs `pip download` for each candidate (one wheel, no dependencies), reads the licence
from the wheel's own metadata (License-Expression, the licence classifiers, a short License
field), keeps the package only when every licence it names is MIT, BSD, Apache-2.0 or PSF, and
extracts its .py files under `<corpus>/<package>/`. Each package, kept or refused, is recorded
with its version, licence, the evidence for it, the wheel's sha256 and the file counts in
`<corpus>/manifest.json`, which ships with the model card. Projects reserved for evaluation or
pinned by the bench (data.EXCLUDED_PROJECTS) are never downloaded, and their vendored copies
inside other packages are skipped file by file (data.excluded).
"""

from __future__ import annotations

import email
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from tqdm import tqdm

from .data import EXCLUDED_PROJECTS, MAX_FILE_BYTES, excluded, load_manifest

ALLOWED = ("MIT", "BSD", "Apache-2.0", "PSF")

# Candidates: widely used, mostly pure-Python projects under the allowed licences (each one's
# licence is still read from its wheel, not trusted from this list).
CANDIDATES = (
    "django", "flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "sqlalchemy", "alembic",
    "requests", "urllib3", "idna", "certifi", "httpx", "httpcore", "h11", "anyio", "sniffio", "trio",
    "starlette", "fastapi", "uvicorn", "gunicorn", "tornado", "twisted", "aiohttp", "yarl", "multidict",
    "frozenlist", "aiosignal", "websockets", "pyzmq", "msgpack", "protobuf", "grpcio",
    "numpy", "scipy", "pandas", "sympy", "networkx", "scikit-learn", "statsmodels", "matplotlib", "seaborn",
    "bokeh", "altair", "xarray", "dask", "distributed", "toolz", "fsspec", "pyarrow", "numba",
    "scikit-image", "imageio", "networkx", "patsy", "joblib", "threadpoolctl", "cloudpickle",
    "pytest", "pluggy", "iniconfig", "black", "isort", "mypy", "jedi", "parso", "pyflakes", "pycodestyle",
    "flake8", "mccabe", "coverage", "nox", "virtualenv", "pip", "setuptools", "wheel", "build",
    "hatchling", "poetry-core", "flit-core", "pyproject-hooks", "tomlkit", "tomli", "tomli-w",
    "rich", "textual", "typer", "prompt-toolkit", "pygments", "babel", "sphinx", "markdown",
    "mistune", "markdown-it-py", "mdurl", "beautifulsoup4", "soupsieve", "html5lib", "bleach",
    "webencodings", "lxml", "cssselect", "pyyaml", "ruamel-yaml", "simplejson", "jsonschema",
    "jsonschema-specifications", "referencing", "rpds-py", "cattrs", "marshmallow", "pydantic",
    "python-dateutil", "pytz", "tzdata", "arrow", "pendulum", "humanize", "six", "decorator",
    "wrapt", "cachetools", "boto3", "botocore", "s3transfer", "google-auth", "oauthlib",
    "requests-oauthlib", "pyjwt", "cryptography", "pyopenssl", "rsa", "pyasn1", "celery", "kombu",
    "billiard", "vine", "redis", "pymongo", "peewee", "sqlparse", "wtforms", "transformers",
    "tokenizers", "safetensors", "huggingface-hub", "datasets", "accelerate", "keras", "jax",
    "flax", "optax", "pygls", "lsprotocol", "docstring-parser", "pyparsing", "regex", "chardet",
    "charset-normalizer", "colorama", "tabulate", "termcolor", "wcwidth", "blinker", "greenlet",
    "async-timeout", "aiofiles", "watchdog", "psutil", "filelock", "platformdirs", "distlib",
    "pexpect", "ptyprocess", "traitlets", "ipython", "jupyter-core", "jupyter-client", "nbformat",
    "nbconvert", "notebook", "tqdm", "hypothesis", "responses", "freezegun", "mock", "factory-boy",
    "faker", "scrapy", "parsel", "w3lib", "itemadapter", "zope-interface", "pillow", "pyglet",
    "pygame", "kivy", "streamlit", "dash", "plotly", "gradio", "langchain-core", "openai",
    "anthropic", "ray", "mlflow", "optuna", "hydra-core", "omegaconf", "fire", "docopt",
)

LICENCE_PATTERNS = (                       # first match names the family; order matters (LGPL before GPL)
    ("LGPL", r"\bLGPL|Lesser General Public"),
    ("AGPL", r"\bAGPL|Affero"),
    ("GPL", r"\bGPL|General Public License"),
    ("MPL", r"\bMPL|Mozilla Public"),
    ("Apache-2.0", r"\bApache"),
    ("MIT", r"\bMIT\b|Expat"),
    ("BSD", r"\bBSD|0BSD"),
    ("PSF", r"\bPSF|Python Software Foundation"),
    ("ISC", r"\bISC\b"),
    ("Unlicense", r"Unlicense|Public Domain|CC0"),
    ("HPND", r"\bHPND|MIT-CMU"),
    ("ZPL", r"\bZPL|Zope Public"),
)


@dataclass
class PackageRecord:
    name: str
    version: str = ""
    licence: str = ""                 # e.g. "MIT", "Apache-2.0 + MIT" (every family named)
    evidence: list[str] = field(default_factory=list)   # the metadata lines the licence was read from
    kept: bool = False
    reason: str = ""                  # why refused (or "" when kept)
    wheel: str = ""
    sha256: str = ""
    pinned_sha256: str = ""           # the sha256 a --same-as manifest recorded, when it differs
    files: int = 0                    # .py files extracted
    skipped_files: int = 0            # vendored excluded projects, too big, not UTF-8
    chars: int = 0


def licence_families(text: str) -> list[str]:
    """Every licence family a piece of metadata names, in pattern order."""
    found = []
    for name, pattern in LICENCE_PATTERNS:
        if re.search(pattern, text, flags=re.IGNORECASE if name in ("PSF",) else 0):
            if not (name == "GPL" and "LGPL" in found) and not (name == "GPL" and "AGPL" in found):
                found.append(name)
    return found


def read_licence(metadata: email.message.Message) -> tuple[list[str], list[str]]:
    """(families, evidence) from a wheel's METADATA: License-Expression (PEP 639) when present,
    else the licence classifiers, else a License field short enough to be a name."""
    expression = metadata.get("License-Expression")
    if expression:
        return licence_families(expression), [f"License-Expression: {expression}"]
    classifiers = [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    classifiers = [c for c in classifiers if c != "License :: OSI Approved"]
    if classifiers:
        families = [f for c in classifiers for f in licence_families(c)]
        return list(dict.fromkeys(families)), classifiers
    field_text = (metadata.get("License") or "").strip()
    if field_text and len(field_text) <= 200:
        return licence_families(field_text), [f"License: {field_text}"]
    if field_text:                              # a whole licence text: its first line names it
        first = field_text.splitlines()[0]
        return licence_families(first), [f"License (first line): {first[:120]}"]
    return [], []


def is_excluded_project(name: str) -> bool:
    return canonical_name(name) in EXCLUDED_PROJECTS


def download(spec: str, into: Path) -> Path:
    """One wheel of `spec` ("name" or "name==version") for this interpreter, no dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(into), spec]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError((result.stderr.strip().splitlines() or ["no wheel"])[-1])
    return wheels[0]


def wheel_metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    path = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(path))


def extract_sources(wheel: zipfile.ZipFile, dest: Path, record: PackageRecord) -> None:
    """The wheel's .py files under dest/, minus vendored excluded projects and oversized or
    non-UTF-8 files."""
    for info in wheel.infolist():
        rel = info.filename
        if not rel.endswith(".py") or ".dist-info/" in rel:
            continue
        if excluded(rel) or info.file_size > MAX_FILE_BYTES:
            record.skipped_files += 1
            continue
        try:
            text = wheel.read(info).decode("utf-8")
        except UnicodeDecodeError:
            record.skipped_files += 1
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        record.files += 1
        record.chars += len(text)


def fetch_one(name: str, corpus: Path, pin: Optional[dict] = None) -> PackageRecord:
    """Fetch one package; `pin` (a record of another manifest) asks for its exact version and
    notes a wheel whose sha256 differs from the one recorded there."""
    record = PackageRecord(name=name)
    if is_excluded_project(name):
        record.reason = "excluded: reserved for evaluation or pinned by the bench"
        return record
    version = pinned_version(pin) if pin else ""
    spec = f"{name}=={version}" if version else name
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(spec, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            record.reason = f"download failed: {exc}"
            return record
        record.wheel = path.name
        record.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        if pin and pin.get("sha256") and pin["sha256"] != record.sha256:
            record.pinned_sha256 = pin["sha256"]      # another build of that version (e.g. another Python)
        with zipfile.ZipFile(path) as wheel:
            meta = wheel_metadata(wheel)
            record.version = meta.get("Version", "")
            families, record.evidence = read_licence(meta)
            record.licence = " + ".join(families)
            if not families:
                record.reason = "licence not stated in the wheel's metadata"
            elif any(f not in ALLOWED for f in families):
                record.reason = f"licence {record.licence} is not one of {', '.join(ALLOWED)}"
            else:
                extract_sources(wheel, corpus / canonical_name(name), record)
                record.kept = record.files > 0
                record.reason = "" if record.kept else "no Python sources in the wheel"
    return record


def pinned_version(record: dict) -> str:
    """The version a manifest record pins: the wheel's file name has the index's version (a
    wheel's METADATA can disagree, e.g. flit_core-4.2.0 says 1.2.3), else the METADATA one."""
    wheel = record.get("wheel") or ""
    parts = wheel.split("-")
    return parts[1] if wheel.endswith(".whl") and len(parts) >= 5 else record.get("version", "")


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_manifest(corpus: Path, records: dict[str, dict]) -> None:
    kept = [r for r in records.values() if r["kept"]]
    body = {"allowed_licences": list(ALLOWED), "excluded_projects": sorted(EXCLUDED_PROJECTS),
            "kept": len(kept), "refused": len(records) - len(kept),
            "files": sum(r["files"] for r in kept), "chars": sum(r["chars"] for r in kept),
            "packages": dict(sorted(records.items()))}
    tmp = corpus / "manifest.json.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(corpus / "manifest.json")


def fetch(names: Iterable[str], corpus: Path, pins: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """Fetch every package not yet in the manifest (so an interrupted fetch resumes); the
    manifest is rewritten after each package, so nothing fetched is lost. `pins` maps a package
    to its record in another manifest, whose version is then fetched."""
    corpus.mkdir(parents=True, exist_ok=True)
    records = load_manifest(corpus)
    pins = pins or {}
    todo = [n for n in dict.fromkeys(canonical_name(n) for n in names) if n not in records]
    for name in tqdm(todo, desc="packages", unit="pkg"):
        records[name] = asdict(fetch_one(name, corpus, pins.get(name)))
        write_manifest(corpus, records)
    return records


def pins_from(manifest: Path) -> dict[str, dict]:
    """The kept packages of a model card's data manifest (or a corpus's manifest.json), to
    rebuild the same corpus: {package: record with version and sha256}."""
    try:
        packages = json.loads(manifest.read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{manifest}: not a data manifest ({exc})") from exc
    return {canonical_name(n): r for n, r in packages.items() if r.get("kept")}


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fim_server.train.packages",
                                description="fetch permissively licensed Python packages as training code")
    p.add_argument("--corpus", default="runs/corpus", help="where sources and manifest.json go")
    p.add_argument("--same-as", metavar="MANIFEST", type=Path,
                   help="fetch the kept packages of this data manifest (a model card's data_manifest.json), "
                        "each at the version it records")
    p.add_argument("packages", nargs="*", help="package names (default: the built-in candidate list)")
    args = p.parse_args(argv)
    try:
        pins = pins_from(args.same_as) if args.same_as else {}
    except ValueError as exc:
        p.error(str(exc))
    records = fetch(args.packages or list(pins) or CANDIDATES, Path(args.corpus), pins)
    kept = [r for r in records.values() if r["kept"]]
    moved = [n for n, r in records.items() if r.get("pinned_sha256")]
    if moved:
        print(f"{len(moved)} wheels differ in sha256 from the pinned manifest "
              f"(same version, another build): {', '.join(moved)}")
    missing = sorted(set(pins) - {n for n, r in records.items() if r["kept"]})
    if missing:
        print(f"not rebuilt: {', '.join(missing)} (see manifest.json for why)")
    print(f"{len(kept)} packages kept, {len(records) - len(kept)} refused; "
          f"{sum(r['chars'] for r in kept) / 1e6:.1f} M chars in {sum(r['files'] for r in kept)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
