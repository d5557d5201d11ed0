"""fim-bench: scorers of every suite, sampled cases, settings, summary, JSONL resume, report,
and one end-to-end run against real workers on the bundled models."""

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import records, safim
from bench.cases import FimCase
from bench.cli import main as bench_main
from bench.pinned_repos import ensure_pinned, pinned_dir
from bench.report import markdown, render
from bench.sandbox import run_program
from bench.scoring import score_many
from bench.settings import Setting, build_settings, parse_settings, parse_sweep
from bench.structure_cases import sample_structure_cases, sample_structure_repo
from bench.suites import SuiteArgs, evenly_spaced, load_cases
from bench.repo_cases import SourceFile
from bench.summary import summarize

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- SAFIM

PROGRAM = "t = int(input())\nfor _ in range(t):\n    a, b = map(int, input().split())\n    {{completion}}\n    print(c)\n"
PROMPT = "Complete the code in python to solve this problem: print a+b.\n\n" + PROGRAM.replace(
    "{{completion}}", safim.PLACEHOLDER)
TESTS = [{"input": "2\n1 2\n3 4\n", "output": ["3\n7"]}, {"input": "1\n-1 1\n", "output": ["0"]}]
CONTROL = "t = int(input())\nfor {{completion}}\n    a, b = map(int, input().split())\n    print(a + b)\n"
API = "import numpy as np\nn = 10\na = {{completion}}\n"


def _record(task_id, eval_prompt, truth, tests, lang="python"):
    prompt = "Complete the code in python:\n\n" + eval_prompt.replace("{{completion}}", safim.PLACEHOLDER)
    return {"lang": lang, "task_id": task_id, "prompt": prompt, "eval_prompt": eval_prompt,
            "ground_truth": truth, "unit_tests": tests}


def _write_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def safim_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("safim")
    _write_gz(d / "block_completion.jsonl.gz", [
        _record("block_1", PROGRAM, "c = a + b", TESTS),
        _record("block_2", PROGRAM, "c = a + b", TESTS, lang="java"),       # not Python: left out
    ])
    _write_gz(d / "control_completion.jsonl.gz", [_record("control_1", CONTROL, "_ in range(t):", TESTS)])
    _write_gz(d / "api_completion.jsonl.gz", [_record("block_1", API, "np.ones((n, n))", [])])
    return d


def test_safim_loads_the_python_records_with_their_fim_prompt(safim_dir):
    cases = load_cases("safim", SuiteArgs(data=str(safim_dir)))
    assert [(c.id, c.kind) for c in cases] == [("api/block_1", "api"), ("block/block_1", "block"),
                                                ("control/control_1", "control")]
    block = cases[1]
    assert block.prefix.endswith("a, b = map(int, input().split())\n    ")
    assert block.suffix == "\n    print(c)\n" and block.middle == "c = a + b"


def test_safim_scores_by_execution_and_ast_match(safim_dir):
    api, block, control = load_cases("safim", SuiteArgs(data=str(safim_dir)))
    cases = [block, block, block, block, control, control, api, api, api]
    completions = [
        "c = b + a",                               # not the ground truth, right output: passes by execution
        "c = a - b",                               # runs, wrong answer
        "c = b + a\n    print('extra')\nx = (",    # trailing lines cut until it is a block at the hole
        "c = a +",                                 # does not parse at all: nothing left
        "_ in range(t):\n    garbage(",             # control: first line only
        "_ in range(t - 1):",
        "np.ones( (n,  n) ) + 1",                  # truncated at the call's ')', whitespace ignored
        "np.ones((n, m))",
        "np.zeros((n, n))",                        # SAFIM compares the arguments only
    ]
    scores = score_many("safim", cases, completions, workers=2)
    assert [s["pass@1"] for s in scores] == [True, False, False, False, True, False, True, False, True]
    assert scores[0]["status"] == "passed" and scores[1]["detail"] == "wrong answer"
    assert scores[2]["scored_text"] == "c = b + a\n    print('extra')\n"
    assert scores[3]["scored_text"] == ""
    assert scores[4]["scored_text"] == "_ in range(t):"
    assert scores[6]["scored_text"] == "np.ones( (n,  n) )"


def test_safim_output_comparison_follows_execeval():
    assert safim.outputs_match("3\n7", "3  \n7\n")
    assert safim.outputs_match("0.5 YES", "0.5000000000000001 yes")
    assert not safim.outputs_match("0.5", "0.50001")
    assert not safim.outputs_match("1 2", "1 2 3")
    assert not safim.outputs_match("Alice", "alice")            # only yes/no/true/false ignore case


def test_safim_data_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        load_cases("safim", SuiteArgs())
    (tmp_path / "block_completion.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        load_cases("safim", SuiteArgs(data=str(tmp_path)))


def test_sandbox_feeds_stdin_and_hides_the_program_text():
    result = run_program("print(int(input()) * 2)", stdin="21\n", capture_output=True)
    assert result.passed and result.output.strip() == "42"
    # The payload descriptor (nonce + program) is closed before the program runs.
    leak = run_program("import os, sys\nos.read(int(sys.argv[-1]), 100)")
    assert leak.status == "failed" and "Bad file descriptor" in leak.detail


# ---------------------------------------------------------------- other scorers


def _case(middle, prefix="x = 1\n", suffix="y = 2\n", kind="line", suite="repo"):
    return FimCase(id=f"c{abs(hash(middle))}", prefix=prefix, suffix=suffix, middle=middle, test=None,
                   entry_point=None, suite=suite, kind=kind)


def test_santacoder_is_first_line_exact_match():
    case = _case("        return False", prefix="def f(a):\n    if a:\n", suffix="\n", kind="single-line")
    scores = score_many("santacoder", [case] * 3, ["return False\n    x = 1", "\n  return False  ", "return True"])
    assert [s["first_line_em"] for s in scores] == [True, True, False]


def test_repo_scores_exact_match_similarity_and_parsing():
    case = _case("z = x + y\n")
    exact, close, broken = score_many("repo", [case] * 3, ["z = x + y", "z = x - y\n", "z = (x +\n"])
    assert exact["exact_match"] and exact["parses"] and exact["scored_text"] == "z = x + y\n"
    assert not close["exact_match"] and close["parses"] and 0.8 < close["edit_similarity"] < 1
    assert not broken["parses"] and broken["edit_similarity"] < close["edit_similarity"]


def test_humaneval_completion_gets_its_line_break():
    case = next(c for c in load_cases("humaneval-single", SuiteArgs()) if c.id == "SingleLineInfilling/HumanEval/2/L0")
    right, wrong = score_many("humaneval-single", [case, case], ["    return number % 1.0", "    return 0"])
    assert right["pass@1"] and right["exact_match"] and right["scored_text"] == "    return number % 1.0\n"
    assert not wrong["pass@1"] and wrong["status"] == "failed"


# ---------------------------------------------------------------- cases, settings


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text(
        '"""Module docstring\nwith two lines\nand a third.\n"""\n\n# a comment\n# and another\n'
        "def f(x):\n    \"\"\"Double x.\n\n    Returns twice x.\n    \"\"\"\n    y = x * 2\n    return y\n")
    (root / "pkg" / "b.py").write_text("import os\n\n\nclass C:\n    # state\n    def g(self):\n"
                                       "        return os.sep\n")
    return root


def test_sampled_cases_are_reproducible(tmp_path):
    root = _tree(tmp_path / "src")
    args = SuiteArgs(repo=str(root), limit=9, seed=3)
    for suite in ("repo", "structure"):
        first, again = load_cases(suite, args), load_cases(suite, args)
        assert first == again and len(first) == 9
        assert all(c.prefix + c.middle + c.suffix == (root / c.id.split(":")[0]).read_text() for c in first)
    other = load_cases("structure", SuiteArgs(repo=str(root), limit=9, seed=4))
    assert other != load_cases("structure", args)


def test_structure_middles_are_whole_lines_of_one_role(tmp_path):
    cases = sample_structure_repo(_tree(tmp_path / "src"), 12, seed=0)
    assert {c.kind for c in cases} == {"code", "comment", "docstring"}
    for case in cases:
        lines = case.middle.splitlines()
        assert case.middle.endswith("\n") and case.prefix.endswith("\n") and 1 <= len(lines) <= 3
        if case.kind == "comment":
            assert all(line.strip().startswith("#") for line in lines)
        elif case.kind == "code":
            assert not any(line.strip().startswith(("#", '"""')) for line in lines)
    only_code = sample_structure_cases([SourceFile("c.py", "x = 1\ny = 2\n")], 4, seed=0)
    assert only_code and {c.kind for c in only_code} == {"code"}      # missing kinds do not stall it


def test_evenly_spaced_subsets_span_the_set():
    cases = load_cases("humaneval-single", SuiteArgs())
    subset = evenly_spaced(cases, 4)
    assert [c.id for c in subset] == [cases[i].id for i in (0, 258, 516, 774)]
    assert load_cases("humaneval-single", SuiteArgs(limit=4)) == subset


def test_pinned_projects_are_installed_once(tmp_path):
    target = pinned_dir(root=tmp_path)
    target.mkdir(parents=True)
    assert ensure_pinned(root=tmp_path) == target            # present: no pip, no network
    assert pinned_dir((("attrs", "1.0"),), root=tmp_path) != target


def test_sweeps_apply_to_the_engines_they_concern():
    sweep = parse_sweep(["threshold=0.5,0.9", "cache=none,dual", "draft_length=4,8"])
    settings = build_settings(["diffusion", "ar", "speculative"], sweep, {"max_tokens": 16})
    names = [s.name for s in settings]
    assert names.count("ar") == 1 and len(names) == 4 + 1 + 8
    assert "diffusion threshold=0.5 cache=none" in names
    assert "speculative threshold=0.9 cache=dual draft_length=8" in names
    assert Setting("diffusion", (("threshold", 0.5),)).request_options({"max_tokens": 16}) == \
        {"max_tokens": 16, "threshold": 0.5}
    for bad in (["threshold=high"], ["nonsense=1"], ["threshold"], ["engine=ar"]):
        with pytest.raises(ValueError):
            parse_sweep(bad)
    with pytest.raises(ValueError, match="threshold"):
        build_settings(["diffusion"], parse_sweep(["threshold=2"]), {})
    with pytest.raises(ValueError, match="known"):
        build_settings(["gpt"], {}, {})


def test_named_settings_compare_modes_that_are_no_grid():
    settings = parse_settings(["ar", "diffusion", "diffusion early_commit=0.5", "diffusion unmask=eb eb_gamma=0.3",
                               "speculative draft-length=8"], {"max_tokens": 16})
    assert [s.name for s in settings] == ["ar", "diffusion", "diffusion early_commit=0.5",
                                          "diffusion unmask=eb eb_gamma=0.3", "speculative draft_length=8"]
    assert settings[3].request_options({"max_tokens": 16}) == {"max_tokens": 16, "unmask": "eb", "eb_gamma": 0.3}
    assert settings[4].options == (("draft_length", 8),)
    guard = parse_settings(["ar repetition_guard=false", "block repetition_guard=off"], {})
    assert [s.options for s in guard] == [(("repetition_guard", False),)] * 2     # every engine has the guard
    bad = {"gpt": "engine", "ar threshold=0.5": "does not apply", "diffusion draft_length=4": "does not apply",
           "diffusion threshold": "OPTION=VALUE", "diffusion color=red": "not a decoding option",
           "diffusion threshold=2": "threshold", "diffusion unmask=greedy": "unmask"}
    for spec, message in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_settings([spec], {})
    with pytest.raises(ValueError, match="twice"):
        parse_settings(["ar", "ar"], {})


# ---------------------------------------------------------------- summary


def _row(setting, engine, case, ms, quality, options=None):
    return {"type": "case", "setting": setting, "engine": engine, "options": options or {}, "case_id": case,
            "kind": "k", "latency_ms": ms, "engine_latency_ms": ms - 1, "nfe": 4, "tokens": 8,
            "stop_reason": "end", "pass@1": quality, "error": None}


def test_summary_finds_the_fastest_setting_at_equal_quality():
    header = {"type": "run", "suite": "humaneval-single", "quality": "pass@1", "settings": []}
    rows = []
    for i in range(4):
        rows += [_row("ar", "ar", i, 10, i < 2),
                 _row("diffusion threshold=0.5", "diffusion", i, 20, i < 1, {"threshold": 0.5}),
                 _row("diffusion threshold=0.9", "diffusion", i, 40, i < 2, {"threshold": 0.9}),
                 _row("diffusion threshold=1.0", "diffusion", i, 80, i < 3, {"threshold": 1.0})]
    summary = summarize([header, *rows])
    ar = summary["settings"][0]
    assert ar["n"] == 4 and ar["quality"]["pass@1"] == 0.5 and ar["tokens_per_forward"] == 2.0
    answer = summary["comparison"]["at_equal_quality"]["diffusion"]
    assert answer["setting"] == "diffusion threshold=0.9" and answer["latency_ratio_p50"] == 4.0
    worse = [r for r in rows if r["setting"] != "diffusion threshold=0.9" and r["setting"] != "diffusion threshold=1.0"]
    statement = summarize([header, *worse])["comparison"]["at_equal_quality"]["diffusion"]["statement"]
    assert statement.startswith("no diffusion setting reaches the AR baseline's pass@1 (0.5)")


def test_modes_are_compared_with_plain_diffusion_and_speculative_counts_ar_forwards():
    header = {"type": "run", "suite": "humaneval-single", "quality": "pass@1", "settings": []}
    rows = []
    for i in range(3):
        spec = _row("speculative", "speculative", i, 200, True)
        spec["stats"] = {"ar_forwards": 3}
        rows += [{**_row("ar", "ar", i, 100, True), "nfe": 5}, _row("diffusion", "diffusion", i, 1000, False),
                 _row("diffusion unmask=eb", "diffusion", i, 500, False, {"unmask": "eb"}), spec]
    summary = summarize([header, *rows])
    comparison = summary["comparison"]
    assert comparison["plain_diffusion"] == "diffusion"
    by = {r["setting"]: r for r in comparison["ratios"]}
    assert by["diffusion unmask=eb"]["diffusion_ratio_p50"] == 0.5 and "diffusion_ratio_p50" not in by["diffusion"]
    assert by["speculative"]["diffusion_ratio_p50"] == 0.2 and by["speculative"]["latency_ratio_p50"] == 2.0
    assert (by["speculative"]["ar_forwards_mean"], by["speculative"]["baseline_forwards_mean"],
            by["speculative"]["ar_forwards_saved"]) == (3, 5, 0.4)
    text = markdown(summary)
    assert "x diffusion p50" in text and "| diffusion unmask=eb | 3 |" in text
    assert "speculative: 3.0 AR forwards per case against 5.0 for AR alone on the same cases (40.0% saved)" in text
    # without a plain diffusion setting there is no such column
    assert "x diffusion p50" not in markdown(summarize([header, *[r for r in rows if r["setting"] != "diffusion"]]))


# ---------------------------------------------------------------- real workers


@pytest.fixture(scope="module")
def ar_worker():
    from bench.spawn import worker

    with worker("ar", threads=1) as address:
        yield address


def _case_rows(out: Path) -> list[dict]:
    return [r for r in records.read_records(out / records.FILE) if r["type"] == "case"]


def test_a_rerun_resumes_and_retries_only_unfinished_cases(tmp_path, ar_worker):
    out = tmp_path / "run"
    common = ["run", "--suite", "humaneval-single", "--engines", "ar", "--connect", f"ar={ar_worker}",
              "--max-tokens", "16", "--out", str(out)]
    three = [c.id for c in load_cases("humaneval-single", SuiteArgs(limit=3))]
    assert bench_main([*common, "--limit", "3"]) == 0
    assert [r["case_id"] for r in _case_rows(out)] == three
    # The second case ended in an error, and the file ends in a torn line (a killed run).
    lines = [json.loads(line) for line in (out / records.FILE).read_text().splitlines()]
    lines = [{**r, "error": "worker said no"} if r.get("case_id") == three[1] else r for r in lines]
    (out / records.FILE).write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "case", "sett')
    assert bench_main([*common, "--limit", "3"]) == 0
    assert [r["case_id"] for r in _case_rows(out)[3:]] == [three[1]]       # only the failed one again
    # A larger subset that contains the first: only its new cases run.
    six = [c.id for c in load_cases("humaneval-single", SuiteArgs(limit=6))]
    assert set(three) < set(six)
    assert bench_main([*common, "--limit", "6"]) == 0
    assert sorted(r["case_id"] for r in _case_rows(out)[4:]) == sorted(set(six) - set(three))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"][0]["n"] == 6 and summary["settings"][0]["errors"] == 0


def test_run_end_to_end_then_report_rebuilds_the_same_summary(tmp_path):
    out = tmp_path / "e2e"
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", "humaneval-single",
                           "--engines", "diffusion,ar", "--quick", "--limit", "3", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _case_rows(out)
    assert sorted((r["engine"], r["case_id"]) for r in rows) == sorted(
        (e, c.id) for e in ("diffusion", "ar") for c in load_cases("humaneval-single", SuiteArgs(limit=3)))
    for r in rows:
        assert r["error"] is None and isinstance(r["pass@1"], bool) and r["single_line"]
        assert 0 < r["engine_latency_ms"] <= r["latency_ms"] and r["nfe"] >= 1
        assert r["tokens_per_forward"] == pytest.approx(r["tokens"] / r["nfe"], abs=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["setting"] for s in summary["settings"]] == ["diffusion", "ar"]
    assert summary["machine"]["cpu"] and set(summary["models"]) == {"diffusion", "ar"}
    assert summary["comparison"]["ratios"][0]["n_paired"] == 3
    assert "| diffusion | 3 |" in (out / "summary.md").read_text() and "| diffusion | 3 |" in done.stdout
    pngs = ["latency.png", "quality_vs_tpf.png", "speedup_vs_threshold.png", "quality_vs_latency.png"]
    assert all((out / p).read_bytes().startswith(b"\x89PNG") for p in pngs)

    before = (out / "summary.json").read_text()
    for name in ["summary.json", "summary.md", *pngs]:
        (out / name).unlink()
    assert bench_main(["report", str(out)]) == 0
    assert (out / "summary.json").read_text() == before
    assert all((out / p).exists() for p in pngs)
    assert render(out)["cases"] == 3


def test_bad_arguments_get_a_clear_error(tmp_path, capsys):
    assert bench_main(["run", "--suite", "safim", "--out", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err
    assert bench_main(["run", "--suite", "repo", "--sweep", "nonsense=1", "--out", str(tmp_path / "x")]) == 2
    assert "not a decoding option" in capsys.readouterr().err
    assert bench_main(["report", str(tmp_path / "nothing")]) == 2
    assert bench_main(["run", "--suite", "repo", "--setting", "ar", "--engines", "ar", "--out", str(tmp_path / "x")]) == 2
    assert "leave out --engines" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_killed_run_stops_its_workers_and_keeps_its_cases(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--suite", "humaneval-single", "--engines", "ar",
                             "--limit", "400", "--max-tokens", "16", "--threads", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / records.FILE).exists() or not _case_rows(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "the run started no worker process"
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and "fim_server" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
    assert 0 < len(_case_rows(out)) < 400


def test_parallel_workers_give_the_same_rows_in_case_order(tmp_path, ar_worker):
    common = ["run", "--suite", "humaneval-single", "--engines", "ar", "--limit", "6", "--max-tokens", "8",
              "--threads", "1"]
    assert bench_main([*common, "--connect", f"ar={ar_worker}", "--out", str(tmp_path / "one")]) == 0
    assert bench_main([*common, "--parallel", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = _case_rows(tmp_path / "one"), _case_rows(tmp_path / "two")
    assert [r["case_id"] for r in two] == [r["case_id"] for r in one]
    assert [r["completion"] for r in two] == [r["completion"] for r in one]      # greedy AR: deterministic
    assert [r["worker"] for r in two] == [0, 1] * 3 and {r["worker"] for r in one} == {0}
    assert render(tmp_path / "two")["workers_per_engine"] == [2]
    assert "workers per engine: 2" in (tmp_path / "two" / "summary.md").read_text()
    assert "workers per engine" not in (tmp_path / "one" / "summary.md").read_text()
    assert bench_main([*common, "--parallel", "0", "--out", str(tmp_path / "x")]) == 2


def test_modes_table_and_plot_across_suites(tmp_path, capsys):
    from bench.modes import main as modes_main

    dirs = []
    for suite, metric in (("humaneval-single", "pass@1"), ("repo", "edit_similarity")):
        rows = []
        for i in range(2):
            spec = _row("speculative", "speculative", i, 200, True)
            spec["stats"] = {"ar_forwards": 2, "acceptance_length": 1.5}
            rows += [{**_row("ar", "ar", i, 100, True), "nfe": 4}, _row("diffusion", "diffusion", i, 1000, False), spec]
        for r in rows:
            r["edit_similarity"] = 0.5 if r["engine"] == "diffusion" else 0.25
        header = {"type": "run", "suite": suite, "quality": metric, "settings": [
            {"setting": "diffusion", "engine": "diffusion", "options": {},
             "config": {"block_size": 32, "cache": "dual", "unmask": "threshold", "threshold": 0.9}}]}
        d = tmp_path / suite
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(summarize([header, *rows])))
        dirs.append(str(d))
    assert modes_main([*dirs, "--plot", str(tmp_path / "modes.png")]) == 0
    out = capsys.readouterr().out
    lines = out.split("\n\n")[0].splitlines()
    assert len(lines) == 2 + 2 * 3
    assert "| humaneval-single | speculative | 2 | pass@1 1.000 | 0.250 | 200 | 2.00 | 0.20 | 2.00 | 50% | 1.50 |" in lines
    assert "| repo | diffusion | 2 | edit_similarity 0.500 | 0.500 | 1000 | 10.00 | 1 | 2.00 | - | - |" in lines
    # the plain setting's meaning is spelled out; a run without kv_shift in its config ran without it
    assert "- repo: `diffusion` = block_size 32, cache dual, kv_shift off, unmask threshold, threshold 0.9" in out
    assert (tmp_path / "modes.png").read_bytes().startswith(b"\x89PNG")
    assert modes_main([str(tmp_path / "nothing")]) == 2
    assert "fim-bench report" in capsys.readouterr().err


def test_the_run_header_records_each_setting_over_its_workers_model_defaults(tmp_path):
    """A setting starts from the worker model's decoding defaults (reported by the worker), so
    the recorded config is what ran: `block` on the bundled block coder is its lossless mode,
    a sampling setting falls back to the threshold mode."""
    from bench.harness import RunConfig, _header
    from bench.settings import Setting

    settings = (Setting("block"), Setting("block", (("lossless", False),)), Setting("block", (("temperature", 0.5),)))
    config = RunConfig(suite="repo", settings=settings, out=tmp_path, base_options={"max_tokens": 32})
    models = {"block": {"device": "cpu", "defaults": {"block_size": 4, "lossless": True}}}
    recorded = {s["setting"]: s["config"] for s in _header(config, models, 1)["settings"]}
    assert recorded["block"]["lossless"] and recorded["block"]["block_size"] == 4
    assert recorded["block"]["max_tokens"] == 32
    assert not recorded["block lossless=false"]["lossless"]
    assert not recorded["block temperature=0.5"]["lossless"]
