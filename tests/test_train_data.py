"""The training corpus: licences read from wheel metadata, excluded projects never fetched or
extracted, whole packages held out, near-duplicates dropped."""

from __future__ import annotations

import email
import json
import zipfile

import pytest

from fim_server.train import packages
from fim_server.train.data import collect_sources, load_manifest, shingles
from fim_server.train.packages import extract_sources, fetch_one, licence_families, read_licence


def metadata(**fields) -> email.message.Message:
    msg = email.message.Message()
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            msg[key.replace("_", "-")] = v
    return msg


@pytest.mark.parametrize("fields, families", [
    ({"License_Expression": "MIT"}, ["MIT"]),
    ({"License_Expression": "Apache-2.0 AND BSD-3-Clause"}, ["Apache-2.0", "BSD"]),
    ({"License_Expression": "MPL-2.0 AND MIT"}, ["MPL", "MIT"]),
    ({"Classifier": ["License :: OSI Approved :: BSD License", "Programming Language :: Python"]}, ["BSD"]),
    ({"Classifier": ["License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)"]}, ["LGPL"]),
    ({"Classifier": ["License :: OSI Approved :: Python Software Foundation License"]}, ["PSF"]),
    ({"License": "GPL-3.0-or-later"}, ["GPL"]),
    ({"License": "Copyright (c) 2020 X\n\nPermission is hereby granted ... MIT" + " text" * 100}, []),
    ({}, []),
])
def test_licence_is_read_from_the_metadata(fields, families):
    found, evidence = read_licence(metadata(**fields))
    assert found == families
    assert bool(evidence) == bool(fields)


def test_expression_wins_over_classifiers():
    found, evidence = read_licence(metadata(License_Expression="GPL-2.0-only",
                                            Classifier=["License :: OSI Approved :: MIT License"]))
    assert found == ["GPL"] and evidence == ["License-Expression: GPL-2.0-only"]


def test_lgpl_is_not_also_counted_as_gpl():
    assert licence_families("LGPL-2.1-or-later") == ["LGPL"]


def wheel(tmp_path, name, licence_line, files):
    path = tmp_path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.4\nName: {name}\nVersion: 1.0\n{licence_line}\n")
        for rel, text in files.items():
            zf.writestr(rel, text)
    return path


def test_fetch_keeps_permissive_packages_and_skips_vendored_excluded_projects(tmp_path, monkeypatch):
    files = {"good/core.py": "def f():\n    return 1\n", "good/_vendor/packaging/version.py": "V = 1\n",
             "good/_vendor/more_itertools/more.py": "M = 1\n", "good/data.txt": "not code"}
    monkeypatch.setattr(packages, "download", lambda name, into: wheel(into, name, "License-Expression: MIT", files))
    rec = fetch_one("good", tmp_path / "corpus")
    assert rec.kept and rec.licence == "MIT" and rec.files == 1 and rec.skipped_files == 2
    assert (tmp_path / "corpus/good/good/core.py").read_text() == files["good/core.py"]
    assert not (tmp_path / "corpus/good/good/_vendor").exists()
    assert rec.version == "1.0" and len(rec.sha256) == 64


def test_fetch_refuses_copyleft_and_unstated_licences(tmp_path, monkeypatch):
    lines = {"gpl": "License-Expression: GPL-3.0-only", "mixed": "License-Expression: MPL-2.0 AND MIT", "none": ""}
    monkeypatch.setattr(packages, "download",
                        lambda name, into: wheel(into, name, lines[name], {f"{name}/a.py": "x = 1\n"}))
    for name in lines:
        rec = fetch_one(name, tmp_path / "corpus")
        assert not rec.kept and rec.files == 0 and rec.reason
        assert not (tmp_path / "corpus" / name).exists()


def test_same_as_fetches_the_recorded_versions_and_notes_other_builds(tmp_path, monkeypatch):
    asked = []

    def fake(spec, into):
        asked.append(spec)
        name = spec.split("==")[0]
        return wheel(into, name, "License-Expression: MIT", {f"{name}/a.py": "x = 1\n"})
    monkeypatch.setattr(packages, "download", fake)
    card = tmp_path / "data_manifest.json"
    card.write_text(json.dumps({"packages": {
        "Good_Pkg": {"kept": True, "version": "1.0", "sha256": "0" * 64},
        "odd": {"kept": True, "version": "1.2.3", "wheel": "odd-4.2.0-py3-none-any.whl"},
        "gone": {"kept": False, "version": "2.0", "reason": "licence GPL"}}}))
    assert packages.main(["--corpus", str(tmp_path / "corpus"), "--same-as", str(card)]) == 0
    assert asked == ["good-pkg==1.0", "odd==4.2.0"]     # only kept packages, at the wheel's version
    record = load_manifest(tmp_path / "corpus")["good-pkg"]
    assert record["kept"] and record["pinned_sha256"] == "0" * 64 != record["sha256"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit):
        packages.main(["--corpus", str(tmp_path / "corpus"), "--same-as", str(bad)])


@pytest.mark.parametrize("name", ["boltons", "sortedcontainers", "attrs", "click", "more-itertools",
                                  "more_itertools", "Packaging"])
def test_excluded_projects_are_never_downloaded(tmp_path, monkeypatch, name):
    def fail(*_):
        raise AssertionError("downloaded an excluded project")
    monkeypatch.setattr(packages, "download", fail)
    rec = fetch_one(name, tmp_path)
    assert not rec.kept and rec.reason.startswith("excluded")


def make_corpus(tmp_path, sources: dict[str, dict[str, str]]):
    corpus = tmp_path / "corpus"
    records = {}
    for package, files in sources.items():
        for rel, text in files.items():
            (corpus / package / rel).parent.mkdir(parents=True, exist_ok=True)
            (corpus / package / rel).write_text(text)
        records[package] = {"kept": True, "files": len(files), "chars": 0}
    (corpus / "manifest.json").write_text(json.dumps({"packages": records}))
    return corpus


def body(seed: int, lines: int = 40) -> str:
    return "".join(f"def f{seed}_{i}(x):\n    return x * {seed} + {i}\n\n" for i in range(lines))


def test_packages_are_held_out_whole_and_near_duplicates_dropped(tmp_path):
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    (stdlib / "mod.py").write_text(body(1))
    pkgs = {f"pkg{i}": {f"pkg{i}/a.py": body(10 + i), f"pkg{i}/b.py": body(100 + i)} for i in range(40)}
    near = body(1).replace("return x * 1 + 7", "return x * 1 + 8")     # one line differs from stdlib/mod.py
    pkgs["pkg0"]["pkg0/copy.py"] = near
    corpus = make_corpus(tmp_path, pkgs)
    train, held, report = collect_sources(stdlib, corpus)
    assert report["near_duplicates"] == 1 and "pkg0/copy.py" not in [s.path for s in train + held]
    held_pkgs = {s.package for s in held}
    train_pkgs = {s.package for s in train}
    assert held_pkgs and not (held_pkgs & train_pkgs)         # no package split between the sides
    assert report["held_out_packages"] == sorted(held_pkgs)
    assert len(train) + len(held) == 1 + 80
    again = collect_sources(stdlib, corpus)
    assert [s.path for s in again[0]] == [s.path for s in train]          # stable across runs


def test_excluded_projects_inside_the_corpus_are_skipped(tmp_path):
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    corpus = make_corpus(tmp_path, {"tool": {"tool/sortedcontainers/sortedlist.py": body(3),
                                             "tool/boltons.py": body(4), "tool/main.py": body(5)}})
    train, held, report = collect_sources(stdlib, corpus)
    assert [s.path for s in train + held] == ["tool/main.py"] and report["excluded"] == 2


def test_shingles_are_token_windows():
    assert shingles("a = b(c)", n=3) == [b"a = b", b"= b (", b"b ( c", b"( c )"]
    assert shingles("x", n=5) == []


def test_stdlib_share_reweights_the_draws():
    from fim_server.train.data import ExampleSampler, Source, stdlib_weighted

    weights = stdlib_weighted([10, 30, 60], [True, False, False], 0.5)
    assert weights[0] / sum(weights) == pytest.approx(0.5) and weights[1:] == [30, 60]
    assert stdlib_weighted([10, 30], [True, False], 0.0) == [10, 30]          # off: by length
    assert stdlib_weighted([10, 30], [False, False], 0.5) == [10, 30]        # no stdlib: unchanged
    sources = [Source("a.py", "x = 1\n" * 20), Source("b.py", "y = 2\n" * 2000, package="pkg")]
    sampler = ExampleSampler(sources, seed=0, window_chars=60, stdlib_share=0.5)
    drawn = [sampler.window().startswith("x") for _ in range(2000)]
    assert 0.45 < sum(drawn) / len(drawn) < 0.55
