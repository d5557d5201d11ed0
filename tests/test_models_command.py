"""`fim-server models` (every family, its engine path, the published layouts that load as it, its
decoding defaults) and how those defaults combine with the options a user gives."""

from __future__ import annotations

import argparse
import json

from fim_server import cli
from fim_server.models.family import FAMILIES
from fim_server.models.layouts import LAYOUTS
from fim_server.wire.options import DecodeConfig, add_arguments, from_arguments, given_arguments


def models_json(capsys) -> dict[str, dict]:
    assert cli.main(["models", "--json"]) == 0
    return {row["family"]: row for row in json.loads(capsys.readouterr().out)}


def test_models_lists_every_family_with_its_engine_layouts_and_defaults(capsys):
    rows = models_json(capsys)
    assert set(rows) == set(FAMILIES)
    assert rows["fim-tiny-dlm"] | {"description": ""} == {
        "family": "fim-tiny-dlm", "source": "bundled", "engine": "canvas", "layouts": [], "defaults": {},
        "description": ""}
    assert (rows["fim-tiny-block"]["engine"], rows["fim-tiny-ar"]["engine"]) == ("block", "ar")
    assert rows["qwen2.5-coder"]["source"] == "transformers" and rows["qwen2.5-coder"]["engine"] == "ar"
    assert rows["fast-dllm-v2"] | {"description": ""} == {
        "family": "fast-dllm-v2", "source": "published", "engine": "block", "layouts": ["fast-dllm-v2"],
        "defaults": {"block_size": 32, "sub_block_size": 8, "threshold": 0.9}, "description": ""}
    assert rows["sdar"]["defaults"] == {"block_size": 4, "threshold": 0.85}
    assert rows["stable-diffcoder"]["layouts"] == ["stable-diffcoder"] and rows["stable-diffcoder"]["engine"] == "block"
    for layout in LAYOUTS.values():                     # every published layout shows under its family
        assert layout.name in rows[layout.family]["layouts"]
        assert rows[layout.family]["source"] == "published"
    for name, row in rows.items():                      # the defaults are options, in range
        assert DecodeConfig().replace(**row["defaults"]).to_dict().items() >= row["defaults"].items(), name
        assert row["engine"] == {"diffusion": "canvas", "block": "block", "ar": "ar"}[FAMILIES[name].kind]


def test_models_prints_a_table(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["family", "source", "engine", "layouts", "defaults"]
    line = next(l for l in out.splitlines() if l.startswith("fast-dllm-v2 "))
    assert line.split()[:4] == ["fast-dllm-v2", "published", "block", "fast-dllm-v2"]
    assert "--block-size 32 --sub-block-size 8 --threshold 0.9" in line
    assert all(name in out for name in FAMILIES)


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(flags))


def test_flags_given_win_over_the_family_defaults_and_the_rest_keep_them():
    base = DecodeConfig(engine="block").replace(block_size=32, sub_block_size=8, threshold=0.9)
    args = parse("--engine", "block", "--threshold", "0.5", "--no-end-guard", "--block-size", "8")
    assert given_arguments(args) == {"engine": "block", "threshold": 0.5, "end_guard": False, "block_size": 8}
    config = from_arguments(args, base)
    assert (config.block_size, config.sub_block_size, config.threshold, config.end_guard) == (8, 8, 0.5, False)
    # a flag given at DecodeConfig's own default still wins over the family's
    assert from_arguments(parse("--block-size", "8"), base).block_size == 8
    assert from_arguments(parse(), base) == base                # no flag given, not even --engine
    assert from_arguments(parse()) == DecodeConfig()
