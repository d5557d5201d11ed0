"""The lossless block mode: drafts verified by the model's own next-token predictions give
exactly the model's greedy left-to-right middle, on real files, with fewer forwards than
tokens once the drafts agree; batches, cancellation and the options it refuses."""

import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from fim_server.engine.block import BlockEngine
from fim_server.engine import lossless
from fim_server.engine.kv import keep_positions, new_cache
from fim_server.engine.lossless import Draft, lookup_drafts, mask_branches, text_order
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model
from fim_server.models.loader import bundled_path
from fim_server.wire.options import DecodeConfig, OptionError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = ["textwrap.py", "json/decoder.py", "heapq.py", "shlex.py"]


def real_cases(n_per_file: int = 2) -> list[InfillRequest]:
    """Cursors at the start of a line in the body of real standard-library files."""
    cases = []
    for name in FILES:
        text = (STDLIB / name).read_text()
        lines = text.splitlines(keepends=True)
        for k in range(n_per_file):
            at = len(lines) * (k + 1) // (n_per_file + 1)
            cut = sum(len(x) for x in lines[:at]) + len(lines[at]) - len(lines[at].lstrip())
            cases.append(InfillRequest(text[max(0, cut - 700):cut], text[cut:cut + 300], f"{name}:{at}"))
    return cases


@pytest.fixture(scope="module")
def engine():
    return BlockEngine(load_model(str(bundled_path("block")), kind="block", dtype="float64"))


@pytest.fixture(scope="module")
def references(engine):
    """Each real case's greedy left-to-right middle (20 tokens at most), computed once."""
    return {req.id: greedy_reference(engine, req, 20) for req in real_cases()}


def greedy_reference(engine, req, max_tokens: int) -> list[int]:
    """The network as a plain causal LM (no attention mask: transformers' causal default, its
    own incremental cache), greedy, banned ids excluded, stopping at an end token."""
    prompt = engine.start(req, DecodeConfig(engine="block", max_tokens=max_tokens)).prompt
    cache, out, feed = DynamicCache(config=engine.model.config), [], list(prompt)
    with torch.inference_mode():
        for _ in range(max_tokens):
            logits, _ = engine.lm.forward(cache, input_ids=torch.tensor([feed]), use_cache=True)
            token = int(logits[0, -1].float().masked_fill(engine.banned, float("-inf")).argmax())
            if token in engine.ids.end_of_middle:
                break
            out.append(token)
            feed = [token]
    return out


@pytest.mark.parametrize("block,lookup,candidates,ngram,alternatives",
                         [(1, 0, 1, 0, 0), (4, 0, 1, 0, 0), (8, 0, 1, 0, 0), (1, 8, 1, 0, 0), (4, 8, 1, 0, 0),
                          (4, 8, 3, 0, 0), (4, 8, 3, 6, 0), (4, 0, 1, 0, 2), (4, 8, 3, 6, 2)])
def test_lossless_equals_greedy_left_to_right_on_real_files(engine, references, block, lookup, candidates, ngram,
                                                            alternatives, monkeypatch):
    """Every draft (the masks' guesses and their second choices, a tree of lookup candidates and
    the guesses, the bundled next-token table's chain) leaves the middle the greedy one; with
    several branches some rounds accept one after the first, so the cache is packed
    (keep_positions) rather than cropped."""
    packed = []
    monkeypatch.setattr(lossless, "keep_positions", lambda *a: packed.append(a[2]) or keep_positions(*a))
    if ngram:
        assert engine.ngrams is not None and len(engine.ngrams) > 1000     # the bundled table
        chains = []
        real_chain = engine.ngrams.chain
        monkeypatch.setattr(engine.ngrams, "chain", lambda *a: chains.append(real_chain(*a)) or chains[-1])
    config = DecodeConfig(engine="block", max_tokens=20, block_size=block, lossless=True, repetition_guard=False,
                          lookup=lookup, lookup_candidates=candidates, ngram=ngram, mask_alternatives=alternatives)
    cases = real_cases()
    results = engine.infill(cases, config)
    for req, got in zip(cases, results):
        assert got.token_ids == references[req.id], req.id
    if block > 1 or lookup:      # agreeing drafts: fewer forwards than tokens over the set
        assert sum(r.stats.nfe for r in results) < sum(len(r.token_ids) for r in results)
    if not lookup and not alternatives:     # one branch, the masks': accepted along it, the cache is cropped
        assert not packed
    if candidates > 1 or alternatives:      # some rounds accept a branch after the first
        assert packed
    if ngram:                     # the table proposed drafts in many rounds (about half, measured)
        assert sum(bool(c) for c in chains) >= len(chains) // 4


def test_a_table_that_knows_the_greedy_middle_saves_forwards_and_a_wrong_one_changes_nothing(engine, references,
                                                                                             monkeypatch):
    """A next-token table counted on the greedy middles themselves drafts them (fewer forwards);
    one that always proposes a token greedy never picks saves none, the middle staying greedy."""
    import numpy as np

    from fim_server.engine.ngrams import NgramTable
    from fim_server.train.ngrams import most_frequent_next

    cases = real_cases()
    config = DecodeConfig(engine="block", max_tokens=20, block_size=4, lossless=True, repetition_guard=False,
                          lookup=0, ngram=8)
    vocab = len(engine.tok)
    # the text before the cursor ends text_order(prompt): the chain starts from its last tokens
    streams = [np.array(text_order(engine.start(r, config).prompt, engine.ids)[-3:] + references[r.id])
               for r in cases]
    knowing = NgramTable({n: most_frequent_next(streams, n, vocab, 1) for n in (3, 2)}, vocab, "")
    never = engine.ids.pad                               # banned: greedy never picks it
    wrong = NgramTable({n: (ctx, np.full(len(ctx), never, dtype=np.int32))
                        for n, (ctx, _) in knowing.tables.items()}, vocab, "")
    runs = {}
    for name, table in (("none", None), ("knowing", knowing), ("wrong", wrong)):
        monkeypatch.setattr(engine, "ngrams", table)
        runs[name] = engine.infill(cases, config)
    for name, results in runs.items():
        assert [r.token_ids for r in results] == [references[r.id] for r in cases], name
    nfe = {name: sum(r.stats.nfe for r in results) for name, results in runs.items()}
    assert nfe["knowing"] < nfe["none"] == nfe["wrong"]


def test_lookup_drafts_save_forwards_where_the_document_repeats_itself(engine):
    """A middle that copies a line of its prefix: the lookup draft proposes it and one round
    verifies it, the output staying the greedy one."""
    line = "        total = total + weights[index] * values[index]\n"
    prefix = "def dot(weights, values):\n    total = 0\n    for index in range(len(values)):\n" + line
    req = InfillRequest(prefix + "    for index in range(len(values)):\n", "    return total\n", "copy")
    config = DecodeConfig(engine="block", max_tokens=20, block_size=4, lossless=True, repetition_guard=False)
    plain, looked = (engine.infill([req], config.replace(lookup=n))[0] for n in (0, 8))
    assert looked.token_ids == plain.token_ids == greedy_reference(engine, req, 20)
    assert looked.stats.nfe < plain.stats.nfe


def test_the_prefill_verifies_a_draft_for_the_cursor(engine, monkeypatch):
    """A lookup draft that knows the greedy middle, offered for the cursor itself, is accepted
    in the very first forward (the prompt, then the draft after it): the whole middle of 6 tokens
    from one forward. A wrong one changes nothing but the forwards."""
    config = DecodeConfig(engine="block", max_tokens=6, block_size=4, lossless=True, repetition_guard=False,
                          ngram=0)
    for req in real_cases()[:4]:
        # the greedy middle for this max_tokens: the prompt's room depends on it, so the 20-token
        # references may have been decoded from a longer or shorter prompt
        want = greedy_reference(engine, req, 6)
        for draft in (want, [want[0] + 1] * 6):
            monkeypatch.setattr(lossless, "lookup_drafts", lambda seen, n, k: [draft[:n]])
            got = engine.infill([req], config)[0]
            assert got.token_ids == want, req.id
            if draft is want:
                assert got.stats.nfe == 1, req.id


def test_lookup_draft_follows_the_latest_longest_match():
    doc = [5, 6, 7, 1, 2, 9, 9, 5, 6, 8, 3, 5, 6]
    assert lookup_drafts(doc, 2) == [[8, 3]]              # (5, 6) last recurs at 7: what followed it
    assert lookup_drafts(doc + [8], 3) == [[3, 5, 6]]     # (5, 6, 8) beats the shorter (6, 8), (8)
    assert lookup_drafts([1, 2, 3, 4], 4) == []           # nothing recurs
    assert lookup_drafts(doc, 0) == []
    assert lookup_drafts([4, 1, 2, 4], 8) == [[1, 2, 4]]  # a one-token match, cut at the end


def test_lookup_candidates_come_latest_and_longest_first_without_repeats():
    doc = [5, 6, 7, 1, 2, 9, 9, 5, 6, 8, 3, 5, 6]
    # (5, 6) recurs twice, then (6) adds nothing new; the one-token tail is all that is left
    assert lookup_drafts(doc, 2, count=4) == [[8, 3], [7, 1]]
    # the same continuation from a shorter match is not proposed twice
    assert lookup_drafts([1, 2, 3, 9, 2, 3, 4, 2, 3], 2, count=3) == [[4, 2], [9, 2]]
    assert lookup_drafts([1, 2, 1, 2, 3, 1, 2], 1, count=3) == [[3], [1]]
    assert lookup_drafts([7, 1, 2, 7, 1, 2, 7], 3, count=3) == [[1, 2, 7]]   # found by every match length


def test_mask_alternatives_swap_in_the_second_choice_likeliest_to_pay():
    top = [[1, 2], [3, 4], [5, 6]]
    # reach x second choice: slot 0 1.0 x 0.3, slot 1 0.6 x 0.35 = 0.21, slot 2 0.6 x 0.5 x 0.1 = 0.03
    probs = [[0.6, 0.3], [0.5, 0.35], [0.8, 0.1]]
    assert mask_branches(top, probs, 0) == [[1, 3, 5]]
    assert mask_branches(top, probs, 2) == [[1, 3, 5], [2, 3, 5], [1, 4, 5]]
    assert mask_branches(top, probs, 9) == [[1, 3, 5], [2, 3, 5], [1, 4, 5], [1, 3, 6]]
    assert mask_branches([[7], [8]], [[0.9], [0.9]], 0) == [[7, 8]]      # first choices only
    assert mask_branches([], [], 2) == [[]]                              # no slot left: an empty branch


def test_a_tree_of_candidates_shares_their_starts():
    tree = Draft.trie([[1, 2, 3], [1, 4], [5]])
    assert tree.tokens == [1, 2, 3, 4, 5] and tree.parents == [-1, 0, 1, 0, -1]
    assert tree.depths() == [0, 1, 2, 1, 0]
    assert tree.child(-1, 1) == 0 and tree.child(0, 4) == 3 and tree.child(0, 5) is None
    seen = tree.lineage()
    assert seen[2].tolist() == [True, True, True, False, False]      # 3 sees 1, 2 and itself
    assert seen[3].tolist() == [True, False, False, True, False]     # 4 sees 1, not its cousins
    assert seen[4].tolist() == [False, False, False, False, True]
    chain = Draft.trie([[7, 8], []])
    assert chain.parents == [-1, 0] and chain.depths() == [0, 1]


@pytest.mark.parametrize("reserved", [True, False])
def test_keep_positions_packs_the_kept_tail(engine, reserved):
    """The engines' reserved-room cache and transformers' plain one alike."""
    config = engine.model.config
    cache = new_cache(config) if reserved else DynamicCache(config=config)
    keys = torch.arange(7.0).reshape(1, 1, 7, 1).expand(1, 2, 7, 3).contiguous()
    for layer in range(config.num_hidden_layers):
        cache.update(keys, -keys, layer)
    keep_positions(cache, 3, [0, 2, 3])                  # positions 3, 5, 6 stay, after 0, 1, 2
    for layer in cache.layers:
        assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 5, 6]
        assert layer.values[0, 1, :, 2].tolist() == [0, -1, -2, -3, -5, -6]


def test_text_order_puts_the_cursor_at_the_end(engine):
    ids = engine.ids
    prompt = [ids.fim_prefix, 10, 11, ids.fim_suffix, 20, 21, ids.fim_middle]
    assert text_order(prompt, ids) == [20, 21, 10, 11]
    spm = [ids.fim_suffix, 20, 21, ids.fim_prefix, 10, 11, ids.fim_middle]
    assert text_order(spm, ids) == [20, 21, 10, 11]
    assert text_order([10, 11], ids) == [10, 11]


def test_batch_equals_one_at_a_time(engine):
    config = DecodeConfig(engine="block", max_tokens=16, block_size=4, lossless=True)
    cases = real_cases()[::3]
    together = engine.infill(cases, config)
    for req, got in zip(cases, together):
        assert got.token_ids == engine.infill([req], config)[0].token_ids


def test_single_line_and_length_stops(engine, references):
    req = real_cases()[0]
    line = engine.infill([req], DecodeConfig(engine="block", max_tokens=20, block_size=4, lossless=True,
                                             single_line=True, repetition_guard=False))[0]
    full = references[req.id]
    assert full[:len(line.token_ids)] == line.token_ids
    assert line.stats.stop_reason in ("line", "end", "length")
    short = engine.infill([req], DecodeConfig(engine="block", max_tokens=3, block_size=8, lossless=True,
                                              repetition_guard=False))[0]
    # a smaller max_tokens leaves more room for context (the budget), so the reference is recomputed
    ref3 = greedy_reference(engine, req, 3)
    assert short.token_ids == ref3 and (len(ref3) < 3 or short.stats.stop_reason == "length")
    one = engine.infill([req], DecodeConfig(engine="block", max_tokens=1, block_size=4, lossless=True,
                                            repetition_guard=False))[0]
    assert one.token_ids == greedy_reference(engine, req, 1) and one.stats.nfe == 1     # the prefill alone


def test_cancellation_between_rounds(engine):
    config = DecodeConfig(engine="block", max_tokens=20, block_size=2, lossless=True)
    cases = real_cases()[:2]
    calls = []

    def stop_first(running):
        calls.append(list(running))
        return {0} if len(calls) >= 3 else set()

    cancelled, other = engine.infill(cases, config, should_stop=stop_first)
    assert cancelled.stats.stop_reason == "cancelled" and cancelled.stats.nfe < 20
    assert other.token_ids == engine.infill([cases[1]], config)[0].token_ids


def test_refused_where_it_cannot_be_lossless(engine, monkeypatch):
    with pytest.raises(OptionError, match="greedily"):
        engine.check(DecodeConfig(engine="block", lossless=True, temperature=0.5))
    monkeypatch.setattr(engine, "shifted", False)
    with pytest.raises(OptionError, match="unshifted"):
        engine.check(DecodeConfig(engine="block", lossless=True))


def test_lossless_is_the_bundled_block_coders_default_and_sampling_falls_back(engine):
    """The family default turns lossless on; a request that samples without naming it gets the
    threshold mode (no refusal), one that names it with a temperature is still refused."""
    import argparse

    from fim_server.wire.options import add_arguments, apply, from_arguments

    base = engine.default_config()
    assert base.lossless and base.block_size == 4
    assert apply(base, {}).lossless
    sampled = apply(base, {"temperature": 0.5})
    assert not sampled.lossless and sampled.temperature == 0.5
    engine.check(sampled)                                     # runs: the threshold mode samples
    named = apply(base, {"temperature": 0.5, "lossless": True})
    with pytest.raises(OptionError, match="greedily"):
        engine.check(named)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert not from_arguments(parser.parse_args(["--temperature", "0.3"]), base).lossless
    assert from_arguments(parser.parse_args(["--temperature", "0.3", "--lossless"]), base).lossless
    req = real_cases()[0]
    out = engine.infill([req], sampled.replace(max_tokens=8))[0]
    assert out.stats.stop_reason and len(out.token_ids) <= 8
