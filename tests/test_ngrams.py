"""The lossless mode's next-token table: counting, chaining, the file and its checks."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from fim_server.engine.ngrams import FILE, NgramTable, context_keys, fingerprint, table_for
from fim_server.models.loader import bundled_path
from fim_server.train.ngrams import build, most_frequent_next

V = 10


def test_context_keys_are_base_vocab_numbers():
    assert context_keys(np.array([1, 2, 3, 4]), 2, V).tolist() == [12, 23, 34]
    assert context_keys(np.array([1, 2, 3, 4]), 3, V).tolist() == [123, 234]


def test_most_frequent_next_keeps_the_commonest_follower_of_frequent_contexts():
    stream = np.array([1, 2, 5, 1, 2, 5, 1, 2, 6, 3, 4, 7, 3, 4, 8])
    ctx, nxt = most_frequent_next([stream], 2, V, min_count=2)
    table = dict(zip(ctx.tolist(), nxt.tolist()))
    assert table[12] == 5                       # 1 2 -> 5 twice, -> 6 once
    assert 34 not in table                      # 3 4 -> 7 once, -> 8 once: below min_count
    assert list(ctx) == sorted(ctx)
    ctx, nxt = most_frequent_next([stream], 2, V, min_count=1)
    assert dict(zip(ctx.tolist(), nxt.tolist()))[34] == 7        # a tie: the lower id


def test_chain_prefers_the_longer_context_and_stops_where_the_table_does():
    table = NgramTable({3: (np.array([123]), np.array([9])), 2: (np.array([23, 39]), np.array([4, 5]))}, V, "")
    assert table.next_token([0, 2, 3]) == 4            # no 3-token match: the 2-token one
    assert table.next_token([1, 2, 3]) == 9            # the 3-token one wins
    assert table.chain([1, 2, 3], 5) == [9, 5]         # 1 2 3 -> 9; 3 9 -> 5; 9 5 -> none
    assert table.chain([1, 2, 3], 1) == [9]
    assert table.chain([7], 4) == [] and table.chain([], 4) == []


def test_save_load_round_trip_and_clear_errors(tmp_path):
    table = NgramTable({3: (np.array([123, 456]), np.array([9, 1])), 2: (np.array([23]), np.array([4]))}, V, "abc")
    table.save(tmp_path / FILE)
    again = NgramTable.load(tmp_path / FILE)
    assert again.vocab_size == V and again.tokenizer == "abc" and len(again) == 3
    assert again.chain([1, 2, 3], 3) == table.chain([1, 2, 3], 3)
    (tmp_path / "junk").write_bytes(b"\x00\x01 not a table")
    with pytest.raises(ValueError, match="not a next-token table"):
        NgramTable.load(tmp_path / "junk")
    NgramTable({2: (np.array([30, 20]), np.array([1, 2]))}, V, "abc").save(tmp_path / "unsorted")
    with pytest.raises(ValueError, match="sorted"):
        NgramTable.load(tmp_path / "unsorted")
    NgramTable({2: (np.array([20]), np.array([V + 3]))}, V, "abc").save(tmp_path / "wide")
    with pytest.raises(ValueError, match="below"):
        NgramTable.load(tmp_path / "wide")


def test_a_table_counted_with_the_models_tokenizer_is_found_beside_the_weights(tmp_path):
    tok = AutoTokenizer.from_pretrained(bundled_path("ar"))
    text = "def f(self):\n    return self.value\n\n" * 30
    table = build([text, "x = 1\n" * 40], tok, limit=10_000, min_count=3)
    assert table.tokenizer == fingerprint(tok) and table.vocab_size == len(tok)
    start = tok.encode("def f(self", add_special_tokens=False)
    assert tok.decode(table.chain(start, 8)).startswith("):\n    return self.value")
    assert table_for(str(tmp_path), tok) is None                  # no table: no chain
    table.save(tmp_path / FILE)
    assert len(table_for(str(tmp_path), tok)) == len(table)
    NgramTable(table.tables, table.vocab_size, "another").save(tmp_path / FILE)
    with pytest.raises(ValueError, match="another tokenizer"):
        table_for(str(tmp_path), tok)


def test_the_bundled_block_coder_ships_a_table_for_its_tokenizer():
    tok = AutoTokenizer.from_pretrained(bundled_path("block"))
    table = table_for(str(bundled_path("block")), tok)
    assert table is not None and len(table) > 10_000
    ids = tok.encode("    def __init__(self", add_special_tokens=False)
    assert tok.decode(table.chain(ids, 2)).startswith(")") or tok.decode(table.chain(ids, 2)).startswith(",")


def test_the_builder_counts_the_training_split_only(tmp_path, monkeypatch):
    """`python -m fim_server.train.ngrams` reads collect_sources' training split: the held-out
    files (and what collect_sources excludes: boltons, sortedcontainers, the pinned projects,
    HumanEval) never reach the table."""
    import shutil

    from fim_server.train import ngrams as builder
    from fim_server.train.data import Source

    model = tmp_path / "model"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_path("ar") / name, model / name)
    train = [Source("a.py", "alpha_beta_gamma = delta_epsilon\n" * 50, package="pkg")]
    held = [Source("b.py", "zeta_eta_theta = iota_kappa\n" * 50, package="held")]
    monkeypatch.setattr(builder, "collect_sources", lambda corpus=None: (train, held, {"train": 1}))
    builder.main(["--model", str(model), "--tokens", "5000", "--min-count", "5"])
    tok = AutoTokenizer.from_pretrained(model)
    table = table_for(str(model), tok)
    assert tok.decode(table.chain(tok.encode("alpha_beta", add_special_tokens=False), 6)).startswith("_gamma")
    assert table.chain(tok.encode("zeta_eta", add_special_tokens=False), 6) == []
