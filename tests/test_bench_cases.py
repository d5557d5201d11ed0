"""Case generation: HumanEval-infilling regeneration and repository cursor sampling."""

import ast
from collections import Counter
from pathlib import Path

import pytest

from bench.humaneval import load_humaneval_infilling, load_released
from bench.repo_cases import KINDS, SourceFile, load_sources, sample_cases, sample_repo_cases

RELEASED = Path("/work/shared/data/humaneval-infilling")
needs_released = pytest.mark.skipif(not RELEASED.is_dir(), reason="released HumanEval-infilling files not present")


@pytest.fixture(scope="module")
def single_line():
    return load_humaneval_infilling(multi_line=False)


@pytest.fixture(scope="module")
def multi_line():
    return load_humaneval_infilling(multi_line=True)


def test_counts(single_line, multi_line):
    assert len(single_line) == 1033
    assert len(multi_line) == 5815
    assert len({c.id for c in multi_line}) == 5815
    assert Counter(c.kind for c in single_line) == {"single-line": 1033}
    assert {c.entry_point for c in single_line} and all(c.test for c in single_line)


def test_single_line_middles_are_one_line(single_line):
    for case in single_line:
        assert case.middle.endswith("\n") and case.middle.count("\n") == 1 and case.middle.strip()


def test_first_case_matches_the_published_rule(single_line):
    case = single_line[0]
    assert case.id == "SingleLineInfilling/HumanEval/0/L0"
    assert case.middle == "    for idx, elem in enumerate(numbers):\n"
    # With i == 0 the rule still appends '\n', leaving a blank line after the docstring.
    assert case.prefix.endswith('"""\n\n')


@needs_released
@pytest.mark.parametrize(
    "file_name, multi",
    [("HumanEval-SingleLineInfilling.jsonl.gz", False), ("HumanEval-MultiLineInfilling.jsonl.gz", True)],
)
def test_regeneration_equals_released_files(file_name, multi, single_line, multi_line):
    released = load_released(RELEASED / file_name)
    regenerated = multi_line if multi else single_line
    assert released == regenerated  # every field, in order, task ids included


@needs_released
def test_load_released_random_span():
    cases = load_released(RELEASED / "HumanEval-RandomSpanInfillingLight.jsonl.gz")
    assert len(cases) == 164
    assert {c.kind for c in cases} == {"random-span-light"}
    assert cases[0].id == "RandomSpanInfillingLight/HumanEval/0/1"


# --- repository cases -----------------------------------------------------------------

FILES = {
    "pkg/core.py": (
        '"""Core helpers."""\n\nimport os\n\n\n'
        "def area(width, height):\n    # rectangles only\n    return width * height\n\n\n"
        "class Greeter:\n    def __init__(self, name):\n        self.name = name\n\n"
        "    def greet(self):\n        return f\"hello {self.name.title()}\"\n"
    ),
    # Non-ASCII text: AST columns are UTF-8 bytes, offsets here are characters.
    "pkg/unicode_names.py": 'größe = "Maß"  # ünïcödé\nπ = 3.14159\nprint(größe, π * 2)\n',
    # Windows line endings must survive untouched.
    "crlf.py": "def f(a):\r\n    b = a + 1\r\n    return b\r\n\r\nx = f(2)\r\n",
    "no_newline_at_end.py": "values = [1, 2, 3]\ntotal = sum(values)",
    "broken.py": "def f(:\n    pass\n",
    ".hidden/skipped.py": "x = 1\n",
}


@pytest.fixture()
def repo(tmp_path):
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    (tmp_path / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))  # not UTF-8
    (tmp_path / "huge.py").write_bytes(b"x = 1\n" * 200_000)  # over 1 MB
    return tmp_path


def test_unusable_files_are_skipped(repo):
    names = [src.name for src in load_sources(repo)]
    assert names == ["crlf.py", "no_newline_at_end.py", "pkg/core.py", "pkg/unicode_names.py"]


def test_repo_cases_rebuild_the_file(repo):
    cases = sample_repo_cases(repo, n=60, seed=0)
    assert len(cases) == 60 and len({c.id for c in cases}) == 60
    assert {c.kind for c in cases} == set(KINDS)
    for case in cases:
        name = case.id.split(":", 1)[0]
        assert case.prefix + case.middle + case.suffix == FILES[name], case.id
        assert case.middle.strip() and case.test is None and case.entry_point is None


def test_repo_case_kinds_have_their_shape(repo):
    for case in sample_repo_cases(repo, n=60, seed=1):
        lines = case.middle.splitlines()
        if case.kind == "line":
            assert len(lines) == 1 and case.prefix[-1:] in ("", "\n")
        elif case.kind == "block":
            assert 2 <= len(lines) <= 6 and lines[0].strip() and lines[-1].strip()
        elif case.kind == "midline":
            assert len(lines) == 1 and "\n" not in case.middle
            assert case.prefix.splitlines()[-1].strip()  # the cursor is inside code
        else:  # ast: the middle is exactly one node's source text, as the stdlib finds it
            original = case.prefix + case.middle + case.suffix
            segments = {ast.get_source_segment(original, node) for node in ast.walk(ast.parse(original))}
            assert case.middle in segments


def test_pause_cases_put_the_cursor_between_words_with_code_before_it(repo):
    cases = sample_repo_cases(repo, n=30, seed=2, kinds=("pause",))
    assert len(cases) == 30 and {c.kind for c in cases} == {"pause"}
    for case in cases:
        name = case.id.split(":", 1)[0]
        assert case.prefix + case.middle + case.suffix == FILES[name], case.id
        before, after = case.prefix[-1], case.middle[0]
        assert not ((before.isalnum() or before == "_") and (after.isalnum() or after == "_")), case.id
        assert "\n" not in case.middle and case.middle.strip()
        assert case.prefix.splitlines()[-1].strip()          # code before the cursor on its line
    assert any(c.prefix.endswith(" ") for c in cases)        # e.g. after `return `


def test_an_unknown_kind_names_the_known_ones(repo):
    with pytest.raises(ValueError, match="pause"):
        sample_repo_cases(repo, n=3, seed=0, kinds=("nope",))


def test_repo_sampling_is_reproducible(repo):
    first = sample_repo_cases(repo, n=40, seed=7)
    assert sample_repo_cases(repo, n=40, seed=7) == first
    assert sample_repo_cases(repo, n=40, seed=8) != first


def test_sampling_ignores_file_order_and_tolerates_odd_sources(repo):
    sources = load_sources(repo)
    assert sample_cases(sources[::-1], n=30, seed=3) == sample_cases(sources, n=30, seed=3)
    # Sources built by callers may be blank or unparseable: no crash, no cases from blanks.
    odd = [SourceFile("blank.py", "\n\n"), SourceFile("bad.py", "def f(:\n    x = 1\n")]
    cases = sample_cases(odd, n=5, seed=0)
    assert cases and all(c.id.startswith("bad.py:") and c.kind != "ast" for c in cases)


def test_one_kind_only_and_exhaustion(repo):
    sources = load_sources(repo)
    lines = sample_cases(sources, n=1000, seed=0, kinds=["line"])
    # Only so many distinct non-blank lines exist; sampling stops instead of looping.
    assert 0 < len(lines) < 1000 and {c.kind for c in lines} == {"line"}
    with pytest.raises(ValueError):
        sample_cases(sources, n=1, seed=0, kinds=["word"])
