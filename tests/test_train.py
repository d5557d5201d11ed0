"""The training recipe: seeded runs are reproducible, snapshots and exports load with
from_pretrained, and the diffusion twin starts from the AR twin's weights."""

import json
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


def test_a_run_resumes_from_its_checkpoint_and_logs_a_changed_config(tmp_path, capsys):
    out = str(tmp_path / "r")
    train(TrainConfig(objective="ar", out=out, **{**TINY, "steps": 2, "eval_every": 2}))
    final = train(TrainConfig(objective="ar", out=out, **{**TINY, "steps": 3, "eval_every": 1}))
    assert "resuming from step 2" in capsys.readouterr().out
    log = json.loads((final / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [2, 3]             # step 2 from the first start, 3 resumed
    assert log["config"]["steps"] == 3 and log["config"]["eval_every"] == 1
    assert log["restarts"] == [{"step": 2, "was": {"steps": 2, "eval_every": 2}, "now": {"steps": 3, "eval_every": 1}}]


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
                              distill_from=str(snapshot), block_size=4, certainty=0.1, ar_fraction=0.5, ar_kl=0.5,
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
    # the prefill, then at most one forward per token (at least one token is committed a step)
    assert 1 <= result.stats.nfe <= 1 + 8 and result.stats.tokens == len(result.token_ids) <= 8
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


# ---------------------------------------------------------------- FIM-weighted AR batches

def _sources():
    from fim_server.train.data import Source

    text = "".join(f"def f{i}(x):\n    y = x * {i}\n    return y + {i}\n\n" for i in range(200))
    return [Source("m.py", text, package="pkg")]


def test_whole_lines_sets_the_share_of_line_cuts():
    import random

    from fim_server.train.data import random_split

    text = _sources()[0].text
    for share, expect in ((1.0, {"lines"}), (0.0, {"midline", "span"})):
        rng = random.Random(0)
        kinds = {s.kind for s in (random_split(text, rng, whole_lines=share) for _ in range(300)) if s}
        assert kinds == expect


def test_pause_points_are_never_inside_a_word_or_indentation():
    from fim_server.train.data import pause_points

    text = "def add(a, b):\n    return a + b\n"
    points = {text[:a].split("\n")[-1] + "|" for a in pause_points(text, 15, len(text) - 1)}
    assert points == {"|", "    |", "    return|", "    return |", "    return a|", "    return a |", "    return a +|",
                      "    return a + |"}


def test_word_cuts_put_rest_of_line_cursors_at_pause_points():
    import random

    from fim_server.train.data import _word_char, random_split

    text = _sources()[0].text

    def mid_word(share):
        rng = random.Random(0)
        cuts = [s for s in (random_split(text, rng, whole_lines=0.0, word_cuts=share) for _ in range(400))
                if s and s.kind == "midline"]
        return sum(_word_char(s.prefix[-1]) and _word_char(s.middle[0]) for s in cuts), len(cuts)

    inside, total = mid_word(0.0)
    assert total > 100 and inside > total // 10       # uniform cursors often fall inside words
    inside, total = mid_word(1.0)
    assert total > 100 and inside == 0


def test_ar_batches_mark_the_middle_labels_and_scale_with_the_drawn_length():
    from fim_server.train.recipe import IGNORE, Batches, Specials, ar_example
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
    cfg = TrainConfig(objective="ar", seq_len=256, max_middle=16, batch=2, context_mix="128,256")
    batches = Batches(tok, _sources(), cfg, seed=0)
    ids, labels, middle = ar_example(tok, Specials(tok), batches.sampler, cfg, 128)
    assert len(ids) <= 128 and len(middle) == len(labels) == len(ids)
    start = ids.index(Specials(tok).mid)
    assert middle == [i >= start for i in range(len(ids))]   # from <|fim_middle|> on: middle tokens, then the end
    assert labels[start:-1] == ids[start + 1:] and labels[-1] == IGNORE
    sizes = set()
    for _ in range(12):
        kind, ids, labels, valid, mid = batches.next()
        assert kind == "ar" and mid.shape == ids.shape and not (mid & ~valid).any()
        sizes.add((ids.shape[0], ids.shape[1] <= 256 * 2 // ids.shape[0]))
    assert sizes == {(2, True), (4, True)}                    # batch x seq_len tokens either way
    with pytest.raises(ValueError, match="context_mix"):
        Batches(tok, _sources(), TrainConfig(objective="ar", seq_len=256, context_mix="512"), seed=0)


def test_block_batches_cut_their_prompts_to_the_length_drawn_from_the_context_mix():
    """With --context-mix a block batch's prompts fit the length drawn for it, with and without
    a teacher (whose own budget split, as served, cuts the distilled prompts)."""
    from fim_server.train.recipe import Batches
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
    from fim_server.models.loader import bundled_path

    teacher = load_engine("ar", str(bundled_path("ar")), dtype="float32")    # a 1024-token window
    for with_teacher in (None, teacher):
        cfg = TrainConfig(objective="block", seq_len=256, max_middle=16, batch=2, block_size=4, context_mix="96,256")
        batches = Batches(tok, _sources(), cfg, seed=3, teacher=with_teacher)
        assert batches.lengths == [96, 256]
        short = max(len(r.prompt) for _ in range(3) for r in batches.block_rows(96))
        long = max(len(r.prompt) for _ in range(3) for r in batches.block_rows(256))
        assert short <= 96 - 16 < long <= 256
        kinds = {batches.next()[0] for _ in range(4)}
        assert kinds == {"block"}


def test_spm_order_puts_the_prefix_next_to_the_middle_in_training_and_in_the_saved_config(tmp_path):
    from fim_server.train.recipe import Batches, Specials, ar_example
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
    sp = Specials(tok)
    cfg = TrainConfig(objective="ar", seq_len=256, max_middle=16, batch=2, fim_order="spm")
    ids, _, _ = ar_example(tok, sp, Batches(tok, _sources(), cfg, seed=0).sampler, cfg)
    assert ids[0] == sp.suf and ids.index(sp.suf) < ids.index(sp.pre) < ids.index(sp.mid)
    assert sp.prompt([10], [20], "spm") == [sp.suf, 20, sp.pre, 10, sp.mid]
    assert sp.prompt([10], [20], "psm") == [sp.pre, 10, sp.suf, 20, sp.mid]
    out = train(TrainConfig(objective="ar", out=str(tmp_path / "spm"), fim_order="spm", **{**TINY, "steps": 1}))
    from fim_server.engine import load_engine
    engine = load_engine("ar", str(out))
    assert engine.lm.family.fim_order == "spm"
    assert engine.prompt([10], [20])[0] == engine.ids.fim_suffix


def test_context_weight_zero_is_the_middle_only_loss_and_one_the_plain_loss(ar_runs):
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from fim_server.train.recipe import IGNORE, Batches, batch_loss

    root, first, _ = ar_runs
    tok = PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
    model = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    cfg = TrainConfig(objective="ar", seq_len=128, max_middle=16, batch=3, context_weight=0.3)
    batch = Batches(tok, _sources(), cfg, seed=1).next()
    _, ids, labels, valid, middle = batch
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=valid.long()).logits.float()
        per = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none")
        labelled = labels.flatten() != IGNORE
        mid = middle.flatten() & labelled
        ctx = labelled & ~middle.flatten()
        assert batch_loss(model, batch, cfg, 0.0).item() == pytest.approx(per[mid].mean().item(), rel=1e-5)
        assert batch_loss(model, batch, cfg, 1.0).item() == pytest.approx(per[labelled].mean().item(), rel=1e-5)
        weighted = (per[mid].sum() + 0.3 * per[ctx].sum()) / (mid.sum() + 0.3 * ctx.sum())
        assert batch_loss(model, batch, cfg).item() == pytest.approx(weighted.item(), rel=1e-5)
    history = json.loads((first / "train_log.json").read_text())["history"]
    assert all("held_out_middle_loss" in h for h in history)


def test_the_teacher_kl_term_is_zero_for_the_teacher_itself_and_the_kl_otherwise(ar_runs):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from fim_server.train.recipe import Batches, batch_loss

    root, first, _ = ar_runs
    tok = PreTrainedTokenizerFast.from_pretrained(BUNDLED_TOKENIZER)
    student = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    earlier = AutoModelForCausalLM.from_pretrained(root / "a" / "step-2", dtype=torch.float32)   # 1 step behind
    cfg = TrainConfig(objective="block", seq_len=128, max_middle=16, batch=3, context_weight=0.3, ar_kl=0.5)
    batch = Batches(tok, _sources(), cfg, seed=1).ar_batch(128)
    _, ids, _, valid, _ = batch
    with torch.no_grad():
        plain = batch_loss(student, batch, cfg).item()
        assert batch_loss(student, batch, cfg, teacher=student).item() == pytest.approx(plain, abs=1e-6)
        p = torch.log_softmax(earlier(input_ids=ids, attention_mask=valid.long()).logits, -1)[valid]
        q = torch.log_softmax(student(input_ids=ids, attention_mask=valid.long()).logits, -1)[valid]
        kl = (p.exp() * (p - q)).sum(-1).mean().item()
        assert kl > 0
        assert batch_loss(student, batch, cfg, teacher=earlier).item() == pytest.approx(plain + 0.5 * kl, rel=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--objective", "diffusion", "--context-mix", "256"], "--context-mix applies to --objective ar and block"),
    (["--objective", "ar", "--whole-lines", "1.5"], "--whole-lines and --word-cuts must lie in"),
    (["--objective", "ar", "--word-cuts", "-0.1"], "--whole-lines and --word-cuts must lie in"),
    (["--objective", "diffusion", "--fim-order", "spm"], "--fim-order must be psm or spm"),
    (["--objective", "ar", "--fim-order", "sp"], "--fim-order must be psm or spm"),
    (["--objective", "ar", "--context-weight", "-1"], "--context-weight must not be negative"),
    (["--objective", "ar", "--ar-kl", "1"], "--ar-kl needs --objective block, --distill-from"),
    (["--objective", "block", "--ar-kl", "1", "--ar-fraction", "0.5"], "--ar-kl needs"),
])
def test_train_refuses_options_it_cannot_honour(flags, message, monkeypatch):
    import argparse

    from fim_server.train import recipe
    from fim_server.train.recipe import add_arguments, main

    def accepted(cfg):          # fail at once instead of training for an hour
        raise AssertionError(f"the options were accepted: {flags}")
    monkeypatch.setattr(recipe, "train", accepted)
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(SystemExit, match=message):
        main(p.parse_args(flags))
