"""The training recipe: seeded runs are reproducible, snapshots and exports load with
from_pretrained, and the diffusion twin starts from the AR twin's weights."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fim_server.wire.options import DecodeConfig
from fim_server.engine import InfillRequest, load_engine
from fim_server.train.recipe import TrainConfig, export, train

BUNDLED_TOKENIZER = Path(__file__).parent.parent / "fim_server" / "bundled" / "fim-tiny-ar"
TINY = dict(tokenizer=str(BUNDLED_TOKENIZER), hidden=32, layers=1, heads=2, intermediate=64, seq_len=64,
            max_middle=16, batch=2, steps=3, warmup=1, threads=1, save_every=2, eval_every=3)


def weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def ar_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    first = train(TrainConfig(objective="ar", out=str(root / "a"), keep_at="2", **TINY))
    second = train(TrainConfig(objective="ar", out=str(root / "b"), keep_at="2", **TINY))
    return root, first, second


def test_seeded_runs_give_identical_weights(ar_runs, tmp_path):
    root, first, second = ar_runs
    assert same(weights(first), weights(second))
    other = train(TrainConfig(objective="ar", out=str(tmp_path / "c"), **{**TINY, "seed": 1}))
    assert not same(weights(first), weights(other))


def test_keep_at_leaves_a_loadable_snapshot_without_optimizer_state(ar_runs):
    root, first, _ = ar_runs
    snap = root / "a" / "step-2"
    assert (snap / "model.safetensors").exists() and not (snap / "train_state.pt").exists()
    assert not same(weights(snap), weights(first))          # one more step changed the weights


def test_diffusion_twin_starts_from_the_ar_snapshot_and_exports(ar_runs, tmp_path):
    root, _, _ = ar_runs
    final = train(TrainConfig(objective="diffusion", out=str(tmp_path / "d"), init_from=str(root / "a" / "step-2"),
                              shifted=True, **{**TINY, "steps": 2}))
    export(final, tmp_path / "bundle")
    engine = load_engine("diffusion", str(tmp_path / "bundle"), dtype="float32")
    assert engine.shifted                                   # the convention travels with the checkpoint
    req, config = InfillRequest("def f(x):\n    return ", "\n"), DecodeConfig(max_tokens=4)
    result = engine.infill([req], config)[0]
    assert 1 <= result.stats.nfe and result.stats.tokens == len(result.token_ids) <= 4
    assert result.text == engine.text(result.token_ids, req, config)     # the ids decode to the text


def test_block_twin_trains_from_the_ar_snapshot_with_distillation_and_decodes(ar_runs, tmp_path):
    """The block objective (complementary masks, certainty forcing, AR batches, the AR model's
    greedy middles as targets) trains from AR weights; the export loads in the block engine."""
    root, _, _ = ar_runs
    snapshot = tmp_path / "ar-fp16"
    export(root / "a" / "step-2", snapshot)                 # float16, as the bundled twins are shipped
    final = train(TrainConfig(objective="block", out=str(tmp_path / "blk"), init_from=str(snapshot),
                              distill_from=str(snapshot), block_size=4, certainty=0.1, ar_fraction=0.5,
                              **{**TINY, "steps": 2}))
    before, after = weights(snapshot), weights(final)
    assert before.keys() == after.keys() and not same({k: v.float() for k, v in before.items()}, after)
    # trained in float32 (in float16 one AdamW step turned the weights into NaN)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in after.values())
    export(final, tmp_path / "bundle")
    engine = load_engine("block", str(tmp_path / "bundle"), dtype="float32")
    assert engine.shifted and engine.lm.family.name == "fim-tiny-block"
    req, config = InfillRequest("def f(x):\n    return ", "\n"), DecodeConfig(engine="block", max_tokens=8, block_size=4)
    result = engine.infill([req], config)[0]
    assert 1 <= result.stats.nfe <= 8 and result.stats.tokens == len(result.token_ids) <= 8
    assert result.text == engine.text(result.token_ids, req, config)


def test_the_data_never_holds_evaluation_projects_or_humaneval(tmp_path):
    """boltons and sortedcontainers (evaluation), the bench's pinned repositories (attrs, click,
    more-itertools, packaging) and HumanEval problems are never training or held-out data."""
    from fim_server.train.data import EXCLUDED_PROJECTS, collect_sources, humaneval_signatures

    assert set(EXCLUDED_PROJECTS) == {"boltons", "sortedcontainers", "attrs", "click", "more-itertools", "packaging"}
    files = {"boltons/iterutils.py": "def chunked(src, size):\n    return src\n",
             "lib/sortedcontainers/sortedlist.py": "class SortedList:\n    pass\n",
             "attr/_make.py": "def attrib():\n    pass\n",
             "click/core.py": "class Command:\n    pass\n",
             "more_itertools/more.py": "def first(iterable):\n    pass\n",
             "vendor/packaging/version.py": "class Version:\n    pass\n",
             "tools/packaging.py": "def pack():\n    pass\n",
             "kept/util.py": "def keep_me(x):\n    return x + 1\n"}
    signature = next(iter(humaneval_signatures()), None)
    if signature:
        files["kept/solutions.py"] = signature + "\n    return None\n"
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    train, held, report = collect_sources(tmp_path)
    assert [s.path for s in train + held] == ["kept/util.py"]
    assert report["excluded"] == 7 and report["humaneval"] == (1 if signature else 0)
