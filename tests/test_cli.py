"""`fim-server complete` end to end in a subprocess, on a random checkpoint built in the test."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "fim_server.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "p.py").write_text("def add(a, b):\n    return ")
    (d / "s.py").write_text("\n\nprint(add(1, 2))\n")
    (d / "bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (d / "latin1").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    return d


@pytest.mark.parametrize("engine,family", [("diffusion", "fim-tiny-dlm"), ("ar", "fim-tiny-ar")])
def test_complete_json(files, tmp_path, engine, family):
    from fim_server.models.random_init import build_random_checkpoint

    model = build_random_checkpoint(tmp_path / engine, family)
    res = run("complete", "--prefix-file", str(files / "p.py"), "--suffix-file", str(files / "s.py"),
              "--engine", engine, "--model", str(model), "--max-tokens", "8", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("completion", "nfe", "tokens", "engine", "cache", "latency_ms"):
        assert key in out
    assert out["engine"] == engine and out["nfe"] >= 1 and out["family"] == family


@pytest.mark.parametrize("family,engine", [(None, "block"), ("fim-tiny-dlm", "diffusion"), ("fim-tiny-ar", "ar"),
                                           ("fim-tiny-block", "block")])
def test_without_engine_the_models_family_picks_it(files, tmp_path, family, engine):
    """No --engine: the bundled model runs on the default (block) engine; a named model on the
    engine its family runs on, instead of an error that the default engine cannot run it."""
    from fim_server.models.random_init import build_random_checkpoint

    model = ["--model", str(build_random_checkpoint(tmp_path / "m", family))] if family else []
    res = run("complete", "--prefix-file", str(files / "p.py"), *model, "--max-tokens", "4", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["engine"] == engine


@pytest.mark.parametrize("bad,message", [("bin", "binary"), ("latin1", "not UTF-8"), ("missing", "does not exist")])
def test_bad_input_files_are_refused_clearly(files, bad, message):
    res = run("complete", "--prefix-file", str(files / bad))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_bad_option_values_are_refused_clearly(files):
    res = run("complete", "--prefix-file", str(files / "p.py"), "--threshold", "1.5")
    assert res.returncode == 2 and "threshold" in res.stderr and "Traceback" not in res.stderr
    res = run("complete", "--prefix-file", str(files / "p.py"), "--cache", "bogus")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_complete_speculative_and_new_decoding_options(files, tmp_path):
    from fim_server.models.random_init import build_random_checkpoint

    dlm = build_random_checkpoint(tmp_path / "dlm", "fim-tiny-dlm", seed=1)
    ar = build_random_checkpoint(tmp_path / "ar", "fim-tiny-ar", seed=2)
    common = ("complete", "--prefix-file", str(files / "p.py"), "--suffix-file", str(files / "s.py"),
              "--max-tokens", "6", "--json")
    res = run(*common, "--engine", "speculative", "--model", str(dlm), "--ar-model", str(ar),
              "--draft-length", "3", "--draft-steps", "2", "--unmask", "eb", "--eb-gamma", "0.5")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["engine"] == "speculative" and out["family"] == "fim-tiny-ar"
    assert out["nfe"] == out["ar_forwards"] + out["draft_forwards"] and out["ar_forwards"] >= 2
    res = run(*common, "--engine", "ar", "--model", str(ar))
    assert json.loads(res.stdout)["completion"] == out["completion"]      # greedy: the AR coder's middle
    res = run(*common, "--model", str(dlm), "--early-commit", "0.3", "--unmask", "eb")   # engine from the model
    assert res.returncode == 0 and "early_commits" in json.loads(res.stdout)


def test_speculative_refuses_twins_with_different_tokenizers(files, tmp_path):
    from fim_server.models.random_init import build_random_checkpoint

    dlm = build_random_checkpoint(tmp_path / "dlm", "fim-tiny-dlm", seed=1)
    ar = build_random_checkpoint(tmp_path / "ar", "fim-tiny-ar", seed=2, vocab_size=300)
    res = run("complete", "--prefix-file", str(files / "p.py"), "--engine", "speculative",
              "--model", str(dlm), "--ar-model", str(ar))
    assert res.returncode == 2 and "one tokenizer" in res.stderr and "Traceback" not in res.stderr
    res = run("complete", "--prefix-file", str(files / "p.py"), "--draft-length", "0")
    assert res.returncode == 2 and "draft_length" in res.stderr


def test_a_reader_that_closes_the_pipe_gets_no_traceback():
    """`fim-server models --json | head -c 10`: the reader is gone before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "fim_server.cli", "models", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("command", ["complete", "serve", "http", "status", "models", "keys", "infill", "train"])
def test_every_command_prints_its_help(command, capsys):
    """--help formats every option's help text (argparse %-formats it: a stray % breaks it)."""
    from fim_server.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser(with_train_options=command == "train").parse_args([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--" in out


def test_train_help_explains_every_option_and_parses_back_to_the_config(capsys):
    """Each TrainConfig field is a flag whose help says what it does and its default."""
    from dataclasses import fields

    from fim_server.cli import build_parser
    from fim_server.train.recipe import TrainConfig

    parser = build_parser(with_train_options=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text and f"(default: {f.default!r})" in text, flag
    args = parser.parse_args(["train", "--objective", "block", "--bf16", "true", "--lr", "3e-4"])
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    assert (cfg.objective, cfg.bf16, cfg.lr, cfg.steps) == ("block", True, 3e-4, TrainConfig().steps)
