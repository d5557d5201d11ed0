"""Batch infilling (`fim-server infill`): holes, outputs, resume after a kill, bad inputs.

The engine is a random fim-tiny-dlm in float64 with greedy decoding: its fills are
deterministic and do not depend on batch mates, so every output is compared against a
reference built one hole at a time straight from the engine.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fim_server import cli
from fim_server.wire.options import DecodeConfig
from fim_server.engine import InfillRequest, load_engine
from fim_server.batch import InfillOptions, LocalRunner, context, fill, find_holes, fingerprint, infill
from fim_server.batch.journal import TMP_TAG, Journal, request_key
from fim_server.batch.outputs import print_summary

CONFIG = DecodeConfig(max_tokens=8)

TREE = {
    "a.py": "def add(a, b):\n    <FILL>\n\n\ndef mul(a, b):\n    return <FILL>\n\nprint(add(1, 2), mul(2, 3))\n",
    "pkg/b.py": "class Stack:\n    def push(self, item):\n        <FILL>\n",
    "pkg/c.txt": "x = [<FILL>, <FILL>, <FILL>]",          # three inline holes, no final newline
    "pkg/plain.py": "x = 1\n",                             # no hole
    "docs/notes.md": "no holes\r\nhere\r\n",               # no hole, CRLF
}


class Crash(BaseException):
    """Stands for the process dying: not an engine error, so nothing catches it."""


class Recording:
    """An engine wrapper that records what it was asked, and can crash after `crash_after` calls
    or fail any request whose suffix contains `fail_on`."""

    def __init__(self, engine, crash_after=None, fail_on=None):
        self.engine, self.crash_after, self.fail_on = engine, crash_after, fail_on
        self.calls, self.requests = 0, []

    def infill(self, requests, config, should_stop=None):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise Crash()
        if self.fail_on and any(self.fail_on in r.suffix for r in requests):
            raise ValueError("this request cannot be decoded")
        self.calls += 1
        self.requests += requests
        return self.engine.infill(requests, config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The model is tiny: a second torch thread only waits for the first (and, on a shared CPU,
    spins for a core), so this module runs on one and gives the setting back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(random_dlm_dir):
    return load_engine("diffusion", str(random_dlm_dir), dtype="float64")


@pytest.fixture(scope="module")
def fp(random_dlm_dir):
    return fingerprint("diffusion", str(random_dlm_dir), None, "float64", CONFIG)


def make_tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode("utf-8"))
    return root


def reference(engine, text: str, config=CONFIG) -> str:
    """Holes filled one at a time, earlier first, each request alone."""
    holes, fills = find_holes(text), []
    for k in range(len(holes)):
        prefix, suffix = context(text, holes, fills, k)
        fills.append(engine.infill([InfillRequest(prefix, suffix)], config)[0].text)
    return fill(text, holes, fills)


def read_tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes().decode("utf-8") for p in sorted(root.rglob("*"))
            if p.is_file() and ".fim-infill" not in p.parts}


def options(**kw) -> InfillOptions:
    return InfillOptions(progress=False, **kw)


# ---------------------------------------------------------------- holes

def test_holes_inline_and_own_line():
    text = "def f():\n    <FILL>\n    x = g(<FILL>)\n  <FILL>  \n<FILL><FILL>\n"
    holes = find_holes(text)
    assert [(h.line, h.column, h.own_line) for h in holes] == [
        (2, 5, True), (3, 11, False), (4, 3, True), (5, 1, False), (5, 7, False)]
    assert all(text[h.start:h.end] == "<FILL>" for h in holes)
    assert find_holes("nothing here") == []
    assert [h.column for h in find_holes("a ?? b ??", marker="??")] == [3, 8]


def test_context_fills_earlier_holes_and_removes_later_markers():
    text = "a = <FILL>\nif a:\n    <FILL>\nb = [<FILL>]\n"
    holes = find_holes(text)
    assert context(text, holes, [], 0) == ("a = ", "\nif a:\nb = []\n")     # own-line hole: line gone
    assert context(text, holes, ["1"], 1) == ("a = 1\nif a:\n    ", "\nb = []\n")
    assert context(text, holes, [None, "pass"], 2) == ("a = \nif a:\n    pass\nb = [", "]\n")  # failed: nothing
    assert fill(text, holes, ["1", None, "2"]) == "a = 1\nif a:\n    <FILL>\nb = [2]\n"


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("mode", ["out", "in_place"])
def test_tree_is_filled_and_files_without_holes_are_untouched(tmp_path, engine, fp, mode):
    src = make_tree(tmp_path / "src", TREE)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    opts = options(out_dir=out, state_dir=tmp_path / "state", batch=3) if mode == "out" else \
        options(in_place=True, state_dir=tmp_path / "state", batch=3)
    summary = infill([src], None, LocalRunner(engine, CONFIG), fp, opts)
    want = {rel: reference(engine, text) for rel, text in TREE.items() if "<FILL>" in text}
    assert summary["holes"] == {"total": 6, "filled": 6, "skipped": 0, "failed": 0, "truncated": 0}
    assert summary["files"]["with_holes"] == 3 and summary["files"]["written"] == 3
    written = out if mode == "out" else src
    got = read_tree(written)
    for rel, text in want.items():
        assert got[rel] == text
    for p, (data, mtime) in before.items():
        rel = p.relative_to(src).as_posix()
        if rel not in want:                         # no hole: not rewritten, not copied
            assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime
            assert not (out / rel).exists()
        elif mode == "out":
            assert p.read_bytes() == data           # inputs are left alone without --in-place
    assert not [p for p in written.rglob("*") if TMP_TAG in p.name]


def test_later_holes_see_earlier_fills(tmp_path, engine, fp):
    src = make_tree(tmp_path / "src", {"a.py": TREE["a.py"]})
    rec = Recording(engine)
    infill([src], None, LocalRunner(rec, CONFIG), fp, options(state_dir=tmp_path / "state"))
    first, second = rec.requests
    assert first.prefix == "def add(a, b):\n    " and "<FILL>" not in first.suffix
    filled_first = first.prefix + engine.infill([first], CONFIG)[0].text
    assert second.prefix.startswith(filled_first) and second.prefix.endswith("return ")


def test_jsonl_records_and_tasks(tmp_path, engine, fp):
    tasks = tmp_path / "tasks.jsonl"
    lines = [json.dumps({"id": "t1", "prefix": "def f(x):\n    return ", "suffix": "\n"}),
             "{not json", json.dumps({"id": "t1", "prefix": "dup"}),
             json.dumps({"id": 7, "prefix": "for i in range(3):\n"}),
             json.dumps({"id": "t3", "prefix": 5}), json.dumps([1, 2])]
    tasks.write_text("\n".join(lines) + "\n")
    src = make_tree(tmp_path / "src", {"pkg/b.py": TREE["pkg/b.py"]})
    records = tmp_path / "holes.jsonl"
    summary = infill([src], tasks, LocalRunner(engine, CONFIG), fp,
                     options(jsonl=str(records), state_dir=tmp_path / "state", batch=2))
    got = [json.loads(line) for line in records.read_text().splitlines()]
    by_id = {r["id"]: r for r in got}
    assert set(by_id) == {"pkg/b.py#0", "t1", "7"}
    assert by_id["t1"]["completion"] == engine.infill([InfillRequest("def f(x):\n    return ", "\n")], CONFIG)[0].text
    assert by_id["7"]["completion"] == engine.infill([InfillRequest("for i in range(3):\n", "")], CONFIG)[0].text
    assert by_id["pkg/b.py#0"]["line"] == 3 and by_id["pkg/b.py#0"]["column"] == 9
    assert all(r["status"] == "filled" and r["stats"]["nfe"] >= 1 for r in got)
    wheres = {p["where"]: p["message"] for p in summary["problems"]}
    assert "not JSON" in wheres[f"{tasks}:2"] and "duplicate task id" in wheres[f"{tasks}:3"]
    assert "must be strings" in wheres[f"{tasks}:5"] and "JSON object" in wheres[f"{tasks}:6"]
    assert summary["tasks"] == 2 and summary["holes"]["filled"] == 3


# ---------------------------------------------------------------- bad input

def test_bad_inputs_are_reported_and_the_run_goes_on(tmp_path, engine, fp):
    src = make_tree(tmp_path / "src", {"good.py": TREE["pkg/b.py"]})
    (src / "latin1.py").write_bytes("caf\xe9 = <FILL>\n".encode("latin-1"))
    (src / "huge.py").write_text("x = 1\n" * 2000 + "<FILL>\n")
    (src / "dangling.py").symlink_to(src / "gone.py")
    os.mkfifo(src / "pipe.py")
    long_prefix = "".join(f"value_{i} = {i}\n" for i in range(300))
    (src / "long.py").write_text(long_prefix + "<FILL>\n")
    config = CONFIG.replace(context_tokens=64)
    image = src / "image.bin"                                  # named too: an error, not skipped
    image.write_bytes(b"\x89PNG\x00\x01<FILL>")
    summary = infill([src, tmp_path / "missing", image], None, LocalRunner(engine, config), fp,
                     options(out_dir=tmp_path / "out", state_dir=tmp_path / "state", max_file_bytes=8000))
    problems = {Path(p["where"]).name: p["message"] for p in summary["problems"]}
    assert problems["image.bin"] == "binary file (contains NUL bytes)"
    assert problems["latin1.py"].startswith("not UTF-8 text")
    assert problems["huge.py"].startswith("too large: 12007 bytes (limit 8000")
    assert problems["dangling.py"].startswith("unreadable")
    assert problems["pipe.py"] == "not a regular file"
    assert problems["missing"] == "does not exist"
    assert summary["holes"]["filled"] == 2 and summary["holes"]["truncated"] == 1
    [msg] = summary["hole_messages"]
    assert msg["where"] == "long.py:301:1" and msg["message"].startswith("context truncated")
    out = read_tree(tmp_path / "out")
    assert set(out) == {"good.py", "long.py"}
    assert out["good.py"] == reference(engine, TREE["pkg/b.py"], config)
    assert json.loads((tmp_path / "state" / "summary.json").read_text())["problems"] == summary["problems"]


def test_binary_files_in_a_tree_are_skipped_and_counted_not_problems(tmp_path, random_dlm_dir):
    """As black and ripgrep do: images and .pyc files found while walking a directory are not
    source; only a binary file named on the command line is an error."""
    src = make_tree(tmp_path / "src", {"good.py": TREE["pkg/b.py"]})
    (src / "img").mkdir()
    (src / "img" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR<FILL>")
    (src / "mod.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00\x00\x00" + b"x" * 100)
    (src / "big.bin").write_bytes(b"\x00" * 9000)              # over --max-file-bytes, binary all the same
    model = ("--model", random_dlm_dir, "--dtype", "float64", "--max-tokens", "8", "--no-progress",
             "--max-file-bytes", "8000")
    out = tmp_path / "out"
    assert run_cli(src, "--out", out, *model) == 0
    summary = json.loads((out / ".fim-infill" / "summary.json").read_text())
    assert summary["problems"] == [] and summary["bad_inputs"] == 0
    assert summary["files"]["skipped_binary"] == 3 and summary["files"]["scanned"] == 1
    assert summary["holes"]["filled"] == 1 and set(read_tree(out)) == {"good.py"}
    printed = io.StringIO()
    print_summary(summary, printed)
    assert "3 binary skipped" in printed.getvalue()
    # named on the command line, a binary file is a problem (and the exit status says so)
    rc = run_cli(src / "img" / "logo.png", src / "good.py", "--out", tmp_path / "out2", *model)
    summary = json.loads((tmp_path / "out2" / ".fim-infill" / "summary.json").read_text())
    assert rc == 1 and summary["files"]["skipped_binary"] == 0
    assert summary["problems"] == [{"where": str(src / "img" / "logo.png"),
                                    "message": "binary file (contains NUL bytes)"}]


def test_failed_hole_keeps_its_marker_and_its_batch_mates_are_filled(tmp_path, engine, fp):
    files = {"ok.py": TREE["pkg/b.py"], "bad.py": "a = <FILL>\nnext = <FILL>\n"}
    src = make_tree(tmp_path / "src", files)
    rec = Recording(engine, fail_on="next =")
    summary = infill([src], None, LocalRunner(rec, CONFIG), fp,
                     options(out_dir=tmp_path / "out", state_dir=tmp_path / "state", batch=4))
    assert summary["holes"]["failed"] == 1 and summary["holes"]["filled"] == 2
    [msg] = summary["hole_messages"]
    assert msg["where"] == "bad.py:1:5" and "ValueError: this request cannot be decoded" in msg["message"]
    out = read_tree(tmp_path / "out")
    assert out["ok.py"] == reference(engine, files["ok.py"])
    holes = find_holes(files["bad.py"])
    second = engine.infill([InfillRequest(*context(files["bad.py"], holes, [None], 1))], CONFIG)[0].text
    assert out["bad.py"] == f"a = <FILL>\nnext = {second}\n"
    assert len(Journal(tmp_path / "state" / "journal.jsonl")) == 2      # the failure is retried next run


# ---------------------------------------------------------------- resume

def many_holes(n_files: int) -> dict:
    """Files of one or two holes with different lengths (so sorting reorders them)."""
    files = {}
    for i in range(n_files):
        body = "".join(f"    v{j} = {j} * {i}\n" for j in range(i % 5))
        second = "\n\ndef g(y):\n    return <FILL>\n" if i % 3 == 0 else ""
        files[f"m{i:02d}/f.py"] = f"def f{i}(x):\n{body}    <FILL>\n{second}"
    return files


def test_crash_after_k_batches_resumes_without_recomputing(tmp_path, engine, fp):
    files = many_holes(9)
    total = sum(len(find_holes(t)) for t in files.values())
    src = make_tree(tmp_path / "src", files)
    opts = options(out_dir=tmp_path / "out", state_dir=tmp_path / "state", batch=2)
    with pytest.raises(Crash):
        infill([src], None, LocalRunner(Recording(engine, crash_after=3), CONFIG), fp, opts)
    journal = Journal(tmp_path / "state" / "journal.jsonl")
    assert len(journal) == 6                                   # 3 batches of 2 were recorded
    rec = Recording(engine)
    summary = infill([src], None, LocalRunner(rec, CONFIG), fp, opts)
    recomputed = {request_key(fp, r.prefix, r.suffix) for r in rec.requests}
    assert not recomputed & set(journal.entries)               # nothing finished is asked for again
    assert len(rec.requests) == total - 6
    assert summary["holes"]["skipped"] == 6 and summary["holes"]["filled"] == total - 6
    assert read_tree(tmp_path / "out") == {rel: reference(engine, t) for rel, t in files.items()}
    again = Recording(engine)
    summary = infill([src], None, LocalRunner(again, CONFIG), fp, opts)
    assert again.calls == 0 and summary["holes"]["skipped"] == total


def test_killed_process_resumes_and_matches_an_uninterrupted_run(tmp_path, engine, random_dlm_dir):
    """A real `fim-server infill` is SIGKILLed once its journal holds a few holes."""
    files = many_holes(40)
    total = sum(len(find_holes(t)) for t in files.values())
    src = make_tree(tmp_path / "src", files)
    out, state = tmp_path / "out", tmp_path / "out" / ".fim-infill"
    config = DecodeConfig(engine="diffusion", max_tokens=24, length="fixed")   # the engine the CLI picks for the model
    cmd = [sys.executable, "-m", "fim_server.cli", "infill", str(src), "--out", str(out), "--batch", "1",
           "--model", str(random_dlm_dir), "--dtype", "float64", "--threads", "1", "--no-progress",
           "--max-tokens", "24", "--length", "fixed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal_file = state / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal_file.exists() and journal_file.read_bytes().count(b"\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done = Journal(journal_file)
    assert 3 <= len(done) < total
    want = {rel: reference(engine, t, config) for rel, t in files.items()}
    for rel, text in read_tree(out).items():                   # what was written is whole
        assert TMP_TAG in rel or text == want[rel]

    rec = Recording(engine)
    fp = fingerprint("diffusion", str(random_dlm_dir), None, "float64", config)
    summary = infill([src], None, LocalRunner(rec, config), fp,
                     options(out_dir=out, state_dir=state, batch=4))
    assert len(rec.requests) == total - len(done)
    assert not {request_key(fp, r.prefix, r.suffix) for r in rec.requests} & set(done.entries)
    assert summary["holes"]["skipped"] == len(done) and summary["holes"]["failed"] == 0
    assert read_tree(out) == want                               # same as one uninterrupted run
    assert len(Journal(journal_file)) == total


# ---------------------------------------------------------------- the command line

def run_cli(*args) -> int:
    return cli.main(["infill", *map(str, args)])


def test_cli_diff_is_the_default_and_applies(tmp_path, engine, random_dlm_dir, capsys, monkeypatch):
    src = make_tree(tmp_path / "src", TREE)
    before = read_tree(src)
    monkeypatch.chdir(tmp_path)
    rc = run_cli(src, "--model", random_dlm_dir, "--dtype", "float64", "--max-tokens", "8", "--no-progress")
    diff = capsys.readouterr().out
    assert rc == 0 and read_tree(src) == before                # a dry run: nothing written
    assert (tmp_path / ".fim-infill" / "journal.jsonl").exists()
    assert diff.count("+++ b/") == 3 and "+++ b/pkg/c.txt" in diff
    if shutil.which("patch"):
        copy = tmp_path / "copy"
        shutil.copytree(src, copy)
        subprocess.run(["patch", "-s", "-p1", "-d", str(copy)], input=diff.encode(), check=True)
        assert read_tree(copy) == {rel: reference(engine, t) for rel, t in TREE.items()}
    rc = run_cli(src, "--in-place", "--model", random_dlm_dir, "--dtype", "float64", "--max-tokens", "8",
                 "--no-progress")
    summary = json.loads((tmp_path / ".fim-infill" / "summary.json").read_text())
    assert rc == 0 and summary["holes"]["skipped"] == 6 and summary["requests_computed"] == 0
    assert read_tree(src) == {rel: reference(engine, t) for rel, t in TREE.items()}   # the dry run's fills


def test_cli_refuses_bad_usage(tmp_path, capsys):
    assert run_cli(tmp_path, "--in-place", "--out", tmp_path / "o") == 2
    assert "exclusive" in capsys.readouterr().err
    assert run_cli() == 2
    assert "nothing to fill" in capsys.readouterr().err
    assert run_cli(tmp_path, "--batch", "0") == 2
    assert "--batch" in capsys.readouterr().err


def test_cli_starts_from_the_family_defaults(monkeypatch, tmp_path):
    """`fim-server infill` decodes with the options a worker on the same model starts from (the
    bundled block coder's blocks of 4, not DecodeConfig's 8); flags still win."""
    import fim_server.batch.command as batch_command
    from fim_server.engine import load_engine

    seen = []

    def capture(args, config, usage_error):
        seen.append(config)
        return 0

    monkeypatch.setattr(batch_command, "command", capture)
    assert run_cli(tmp_path, "--engine", "block") == 0
    assert run_cli(tmp_path, "--engine", "block", "--block-size", "2") == 0
    worker_default = load_engine("block").default_config()
    assert worker_default.block_size != DecodeConfig().block_size            # the family sets one
    assert seen[0] == worker_default
    assert seen[1] == worker_default.replace(block_size=2)
