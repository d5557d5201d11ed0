"""Scoring half of the benchmark: sandbox, HumanEval execution and text metrics."""

import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from bench.humaneval import load_humaneval_infilling
from bench.metrics import edit_similarity, exact_match, first_line_exact_match, levenshtein, parses
from bench.sandbox import run_program, score_humaneval, score_humaneval_many


@pytest.fixture(scope="module")
def single_line():
    return load_humaneval_infilling(multi_line=False)


def test_canonical_middles_pass_all_single_line_cases(single_line):
    # All 1033 cases: about 20 s on two busy cores (each case is one short subprocess).
    results = score_humaneval_many(single_line, [case.middle for case in single_line], workers=4)
    failures = [(case.id, r.status, r.detail) for case, r in zip(single_line, results) if not r.passed]
    assert failures == []


def test_wrong_completions_fail(single_line):
    case = next(c for c in single_line if c.id == "SingleLineInfilling/HumanEval/2/L0")
    assert case.middle == "    return number % 1.0\n"
    assert score_humaneval(case, "    return number\n").status == "failed"
    assert score_humaneval(case, "    return number %\n").status == "error"  # does not compile
    assert score_humaneval(case, case.middle).passed


def test_early_exit_is_not_a_pass(single_line):
    case = next(c for c in single_line if c.id == "SingleLineInfilling/HumanEval/2/L0")
    # Exiting with status 0 before check() runs must not count as passing the tests.
    assert score_humaneval(case, "    import sys; sys.exit(0)\n").status == "failed"
    assert score_humaneval(case, "    import os; os._exit(0)\n").status == "failed"


def test_tests_are_required(single_line):
    with pytest.raises(ValueError):
        score_humaneval(replace(single_line[0], test=None), "")


def test_sandbox_passes_and_fails_plain_programs():
    assert run_program("x = 1\nassert x == 1\n").passed
    result = run_program("raise KeyError('boom')")
    assert result.status == "failed" and "KeyError" in result.detail


def test_sandbox_stops_an_infinite_loop():
    started = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 5


def test_sandbox_stops_a_sleeping_program():
    # Not burning CPU, so only the wall-clock timeout (and the group kill) can stop it.
    started = time.monotonic()
    assert run_program("import time\ntime.sleep(60)\n", timeout_s=1.0).status == "timeout"
    assert time.monotonic() - started < 5


def test_sandbox_refuses_writes_outside_its_directory(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    attempts = [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import os\nos.chdir('/')\nopen({str(target.relative_to('/'))!r}, 'w')",
    ]
    for source in attempts:
        result = run_program(source)
        assert result.status == "failed" and "PermissionError" in result.detail, source
        assert not target.exists()


def test_sandbox_allows_writes_inside_its_directory():
    source = "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
    assert run_program(source).passed


def test_sandbox_leaves_no_directory_behind():
    # The program reports its working directory through the error detail.
    result = run_program("import os\nraise RuntimeError(os.getcwd())")
    workdir = Path(result.detail.split("RuntimeError: ", 1)[1])
    assert workdir.name.startswith("fim-sandbox-") and not workdir.exists()


def test_sandbox_blocks_sockets():
    for source in [
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))",
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=1)",
    ]:
        result = run_program(source)
        assert result.status == "failed" and "sandbox: socket" in result.detail, source


def test_sandbox_blocks_subprocesses_and_limit_changes():
    assert "subprocess" in run_program("import subprocess\nsubprocess.run(['true'])").detail
    assert "setrlimit" in run_program("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (99, 99))").detail


def test_sandbox_caps_memory():
    result = run_program("x = bytearray(4 << 30)")
    assert not result.passed and "MemoryError" in result.detail


def test_exact_match_ignores_trailing_space_and_surrounding_blank_lines():
    assert exact_match("\n    return x  \n\n", "    return x\n")
    assert exact_match("a\t\nb", "a\nb\n")
    assert not exact_match("return x", "    return x")  # indentation is meaning in Python
    assert not exact_match("a\n\nb", "a\nb")  # inner blank lines count


def test_edit_similarity():
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("return x  \n", "return x") == 1.0  # same normalization as exact match
    assert 0.0 <= edit_similarity("for i in range(n):", "while i < n:") <= 1.0


def test_levenshtein_against_textbook_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == 3
    assert levenshtein("abcdef", "abcdef") == 0
    assert levenshtein("prefix-a-suffix", "prefix-bb-suffix") == 2


def test_first_line_exact_match():
    assert first_line_exact_match("\n  x = 1\nmore junk\n", "x = 1\n")
    assert not first_line_exact_match("x = 2\n", "x = 1\n")
    assert first_line_exact_match("", "\n\n")


def test_parses():
    assert parses("def f(x):\n    return x\n")
    assert not parses("def f(x:\n")
    assert not parses("x = 1\x00")
    assert not parses("if True:\nreturn")
