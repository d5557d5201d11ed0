"""The tree shows the data path: one package per stage, no import cycles, and the front-ends
(the language server, the wire) stay free of torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fim_server", "lsp", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "results" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its body (deferred imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle_between_the_projects_modules():
    modules = project_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_fim_server_has_a_package_per_stage_and_few_top_level_modules():
    top = sorted(p.name for p in (ROOT / "fim_server").glob("*.py"))
    assert len(top) <= 5, top
    packages = {p.name for p in (ROOT / "fim_server").iterdir() if (p / "__init__.py").exists()}
    assert {"wire", "engine", "worker", "batch", "train", "models"} <= packages


def test_the_language_server_and_the_wire_import_without_torch():
    """Every lsp module and the wire package import with torch (and transformers) unavailable."""
    lsp_modules = sorted(n for n in project_modules() if n == "lsp" or n.startswith("lsp."))
    wire_modules = sorted(n for n in project_modules() if n.startswith("fim_server.wire"))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {lsp_modules + wire_modules!r}:\n"
        "    __import__(m)\n"
        "assert 'torch' not in sys.modules\n"
        "print('imported', len(sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported" in done.stdout


def test_the_plain_install_brings_the_language_server():
    """`pip install -e .` (the README's first command) must give a working fim-lsp: its
    dependencies are core requirements, not behind an extra."""
    from importlib.metadata import requires

    core = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
            for r in requires("fim-server") or [] if "extra ==" not in r}
    assert {"pygls", "lsprotocol", "pyzmq", "msgpack"} <= core
    done = subprocess.run([sys.executable, "-m", "lsp.server", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--connect" in done.stdout
