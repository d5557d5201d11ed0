"""The diffusion engine against a plain reference, across cache modes, conventions and batches."""

import dataclasses

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.repetition import loop_cut
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model

REQUESTS = [
    InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "r0"),
    InfillRequest("class Stack:\n    def push(self, item):\n        ", "\n    def pop(self):\n        return self.items.pop()\n", "r1"),
    InfillRequest("for i in range(10):\n", "", "r2"),
]


@pytest.fixture(scope="module", params=[False, True], ids=["unshifted", "shifted"])
def engine(request, random_dlm_dir):
    lm = load_model(str(random_dlm_dir), kind="diffusion", dtype="float64")
    lm.family = dataclasses.replace(lm.family, shifted=request.param)
    return DiffusionEngine(lm)


def reference_decode(engine, req, length, block, tau=1.0):
    """One full forward per step, commit the single most confident masked position of the block;
    end tokens may only be proposed at the first undecided slot (the end guard)."""
    ids, model = engine.ids, engine.model
    bos = [ids.bos] if ids.bos is not None else []
    row = engine.start(req, DecodeConfig(length="fixed", max_tokens=length))
    lead, suffix = row.lead, row.suffix
    canvas = [ids.mask] * length
    banned = [i for i in ids.banned if i < model.config.vocab_size] + [ids.expand]
    shift = 1 if engine.shifted else 0
    for start in range(0, length, block):
        end = min(start + block, length)
        while ids.mask in canvas[start:end]:
            x = torch.tensor([lead + canvas + suffix])
            full_mask = torch.ones(1, 1, x.shape[1], x.shape[1], dtype=torch.bool)
            logits = model(input_ids=x, attention_mask=full_mask).logits[0].float()
            logits[:, banned] = float("-inf")
            best = None
            first = canvas.index(ids.mask)
            for j in range(start, end):
                if canvas[j] != ids.mask:
                    continue
                row_logits = logits[len(lead) + j - shift].clone()
                if j != first or first == 0:
                    row_logits[list(ids.end_of_middle)] = float("-inf")
                conf, tok = torch.softmax(row_logits, -1).max(-1)
                if best is None or conf > best[0]:
                    best = (conf, j, tok.item())
            canvas[best[1]] = best[2]
        settled = canvas[:canvas.index(ids.mask)] if ids.mask in canvas else canvas
        if any(t in ids.end_of_middle for t in settled):
            break
    for j, t in enumerate(canvas):
        if t in ids.end_of_middle:
            canvas = canvas[:j]
            break
    return [t for t in canvas if t != ids.mask]


@pytest.mark.parametrize("block", [4, 32])
def test_one_token_per_step_without_cache_equals_reference(engine, block):
    cfg = DecodeConfig(cache="none", threshold=1.0, length="fixed", max_tokens=12, block_size=block,
                       repetition_guard=False)
    for req in REQUESTS:
        got = engine.infill([req], cfg)[0]
        assert got.token_ids == reference_decode(engine, req, 12, block)
        assert got.stats.nfe == got.stats.steps


@pytest.mark.parametrize("length", ["fixed", "expand"])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_refreshed_every_step_equals_no_cache(engine, mode, length):
    base = DecodeConfig(threshold=0.2, length=length, max_tokens=16, initial_length=6, block_size=5)
    want = engine.infill(REQUESTS, base.replace(cache="none"))
    got = engine.infill(REQUESTS, base.replace(cache=mode, refresh_every=1))
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.text for r in got] == [r.text for r in want]
    assert all(r.stats.cache == mode for r in got)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_block_forward_matches_full_forward(engine, mode):
    """With a fresh cache, running only the active positions gives the full forward's logits."""
    cfg = DecodeConfig(cache=mode, max_tokens=16, block_size=6, length="fixed")
    rows = [engine.start(r, cfg) for r in REQUESTS]
    for row in rows:                                       # commit a few tokens so the state is not trivial
        row.canvas[0] = row.canvas[3] = 100
    full, _ = engine._predict(rows, cfg)                   # refresh: full forward, captures KV
    assert all(r.kv is not None for r in rows)
    cached, _ = engine._predict(rows, cfg)                 # cached: only the active positions run
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["none", "prefix", "dual"])
def test_batch_of_n_equals_batch_of_one(engine, mode):
    cfg = DecodeConfig(cache=mode, threshold=0.3, max_tokens=16, initial_length=6, block_size=8)
    together = engine.infill(REQUESTS, cfg)
    alone = [engine.infill([r], cfg)[0] for r in REQUESTS]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.stats.nfe for r in together] == [r.stats.nfe for r in alone]


def test_stats_are_filled(engine):
    res = engine.infill(REQUESTS[:1], DecodeConfig(max_tokens=8, length="fixed", threshold=0.5))[0]
    s = res.stats
    assert s.engine == "diffusion" and s.cache == "dual"
    assert s.nfe >= 1 and s.steps == s.nfe
    assert s.tokens == len(res.token_ids)
    assert s.tokens_per_forward == pytest.approx(s.tokens / s.nfe, abs=1e-3)
    assert s.prompt_tokens > 0 and s.decode_ms > 0 and s.latency_ms >= s.decode_ms
    # at least one commit a step: 8 tokens never need the step cap; the reason says which way it ended
    looped = s.stop_reason == "repeat" and loop_cut(res.token_ids, engine.blank_ids) is None
    assert looped or s.stop_reason == ("empty" if not res.text else "length" if s.tokens == 8 else "end")


def test_step_cap_is_respected(engine):
    cfg = DecodeConfig(cache="none", threshold=1.0, length="fixed", max_tokens=20, max_steps=3)
    res = engine.infill(REQUESTS[:1], cfg)[0]
    assert res.stats.nfe == 3
    # stopped by the cap with three tokens, unless the third commit was the end token
    expected = "empty" if not res.text else "steps" if res.stats.tokens == 3 else "end"
    assert res.stats.stop_reason == expected


def test_should_stop_cancels_between_steps(engine):
    calls = []

    def stop(running):
        calls.append(list(running))
        return {0} if len(calls) == 2 else set()

    cfg = DecodeConfig(cache="dual", threshold=1.0, length="fixed", max_tokens=12)
    res = engine.infill(REQUESTS[:2], cfg, should_stop=stop)
    assert res[0].stats.cancelled and res[0].stats.stop_reason == "cancelled"
    assert res[0].stats.nfe == 1
    assert not res[1].stats.cancelled and res[1].stats.nfe > 1


def test_huge_prefix_is_truncated_to_the_budget(engine):
    req = InfillRequest("x = 1\n" * 50_000, "y = 2\n" * 50_000)
    res = engine.infill([req], DecodeConfig(max_tokens=8))[0]
    assert res.stats.truncated
    assert res.stats.prompt_tokens <= engine.lm.context_tokens - 8


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_expand_edit_keeps_cached_logits_exact(engine, mode):
    """After an expand changes the canvas length, dual without kv_shift refreshes (the suffix moved)
    and sees the exact state; prefix keeps its cache (nothing before the block moved), stale only in
    the way every commit makes it stale (deeper prefix layers attend to the block), like Fast-dLLM.
    (With kv_shift, dual moves its cached keys instead: tests/test_kv_shift.py.)"""
    cfg = DecodeConfig(cache=mode, max_tokens=16, initial_length=6, block_size=8, length="expand", kv_shift=False)
    row = engine.start(REQUESTS[0], cfg)
    engine._predict([row], cfg)
    cached = row.kv
    row.commit([1], [engine.ids.expand], mode)
    assert len(row.canvas) == 7 and row.block_end == 7
    assert row.needs_refresh(0) == (mode == "dual")
    got, _ = engine._predict([row], cfg)
    fresh = engine.start(REQUESTS[0], cfg)
    fresh.canvas, fresh.block_end = list(row.canvas), row.block_end
    want, _ = engine._predict([fresh], cfg.replace(cache="none"))
    assert got.shape == want.shape
    if mode == "dual":
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    else:
        assert row.kv is cached                        # no refresh: the lead's cache was kept as it was
        assert not torch.equal(got, want)              # ... and is stale the Fast-dLLM way


def test_two_rows_of_one_document_in_a_batch_after_kv_reuse(engine):
    """Rows holding reused KV are told apart by identity: equal-looking rows once crashed the step
    (dataclass equality compared their KV tensors)."""
    req = InfillRequest("import os\nimport sys\n\ndef f(x):\n    return ", "\n", "a", key="doc")
    cfg = DecodeConfig(max_tokens=8, length="fixed")
    first = engine.infill([req], cfg)[0]
    both = engine.infill([req, req], cfg)
    assert both[0].stats.reused_tokens > 0
    assert both[0].token_ids == both[1].token_ids
    assert len(first.token_ids) > 0
