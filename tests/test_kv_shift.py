"""kv_shift: after an expand/delete in the active block, the dual cache's keys behind the block
are rotated to their new positions instead of recomputing everything in a full forward."""

import pytest
import torch
from transformers import DynamicCache

from fim_server.wire.options import DecodeConfig
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.kv import RowKV, rope_inv_freq, shift_keys
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model

PREFIX = "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n    return "
ANGLE_ATOL = 1e-5
SUFFIX = "\n\n\ndef median(values):\n    values = sorted(values)\n    return values[len(values) // 2]\n"


@pytest.fixture(scope="module")
def random_dlm(random_dlm_dir):
    return DiffusionEngine(load_model(str(random_dlm_dir), kind="diffusion", dtype="float64"))


def bidirectional_kv(engine: DiffusionEngine, ids: list[int], positions: list[int]) -> RowKV:
    cache = DynamicCache(config=engine.model.config)
    n = len(ids)
    engine.lm.forward(cache, input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]),
                      attention_mask=torch.ones((1, 1, n, n), dtype=torch.bool), use_cache=True)
    return RowKV.capture(cache, 0, torch.arange(n))


def test_shifted_keys_equal_keys_computed_at_the_new_positions(random_dlm):
    ids = random_dlm.tok.encode(PREFIX + SUFFIX)[:40]
    at = bidirectional_kv(random_dlm, ids, list(range(len(ids))))
    for delta in (1, 3, -2):
        moved = bidirectional_kv(random_dlm, ids, [p + 5 + delta for p in range(len(ids))])
        base = bidirectional_kv(random_dlm, ids, [p + 5 for p in range(len(ids))])
        # a uniform shift leaves every hidden state alone: all layers' keys are the rotated ones
        # (to float32 precision: transformers computes the RoPE angles in float32)
        got = shift_keys(base, 0, delta, random_dlm.rope_inv_freq)
        for (k1, v1), (k2, v2), (k0, _) in zip(got.layers, moved.layers, base.layers):
            torch.testing.assert_close(k1, k2, rtol=0, atol=ANGLE_ATOL)
            torch.testing.assert_close(v1, v2, rtol=0, atol=ANGLE_ATOL)
            assert (k0 - k2).abs().max() > 1e-2          # unrotated keys are far off: the test can fail
    # slots before `start` stay; the first layer's keys depend on their own position only
    start, delta = 12, 2
    positions = list(range(start)) + [p + delta for p in range(start, len(ids))]
    want = bidirectional_kv(random_dlm, ids, positions).layers[0][0]
    got = shift_keys(at, start, delta, random_dlm.rope_inv_freq).layers[0][0]
    torch.testing.assert_close(got, want, rtol=0, atol=ANGLE_ATOL)
    assert torch.equal(got[:, :start], at.layers[0][0][:, :start])


def test_plain_rope_only(random_dlm):
    assert rope_inv_freq(random_dlm.model) is not None
    rotary = random_dlm.model.model.rotary_emb
    before = rotary.rope_type
    rotary.rope_type = "dynamic"       # angles that depend on the length do not compose
    try:
        assert rope_inv_freq(random_dlm.model) is None
    finally:
        rotary.rope_type = before


# ---------------------------------------------------------------- in the engine (bundled twin: it expands)


@pytest.fixture(scope="module")
def bundled():
    return DiffusionEngine(load_model(None, kind="diffusion", dtype="float64"))


def run(engine: DiffusionEngine, config: DecodeConfig) -> tuple[list[str], int]:
    """Completions of a few middles and the number of full forwards they took."""
    full = engine._full_forward
    count = 0

    def counting(rows, **kw):
        nonlocal count
        count += len(rows)
        return full(rows, **kw)

    engine._full_forward = counting
    try:
        texts = [engine.infill([InfillRequest(PREFIX, SUFFIX)], config)[0].text,
                 engine.infill([InfillRequest("import os\n\ndef home():\n    return ", "\n")], config)[0].text]
    finally:
        engine._full_forward = full
    return texts, count


def test_dual_cache_moves_keys_instead_of_refreshing(bundled):
    config = DecodeConfig(max_tokens=48, block_size=16, length="expand", kv_shift=False)
    plain, refreshes = run(bundled, config)
    shifted, fewer = run(bundled, config.replace(kv_shift=True))
    assert refreshes > 6, "the twin must expand for this test to mean anything"
    assert fewer <= 6 and fewer < refreshes            # at most one per block (3 blocks, 2 requests)
    assert all(shifted) and all(plain)


def test_on_by_default_and_off_where_it_cannot_apply(bundled):
    config = DecodeConfig(max_tokens=32, block_size=16, length="expand", kv_shift=False)
    assert DecodeConfig().kv_shift is True
    plain = run(bundled, config)
    # no cached suffix to move in prefix mode: the same answers
    assert run(bundled, config.replace(cache="prefix", kv_shift=True)) == run(bundled, config.replace(cache="prefix"))
    # a model without plain RoPE refreshes as before
    saved, bundled.rope_inv_freq = bundled.rope_inv_freq, None
    try:
        assert run(bundled, config.replace(kv_shift=True)) == plain
    finally:
        bundled.rope_inv_freq = saved


def test_shifted_block_stats_stay_consistent(bundled):
    result = bundled.infill([InfillRequest(PREFIX, SUFFIX)], DecodeConfig(max_tokens=48, kv_shift=True))[0]
    s = result.stats
    assert s.tokens == len(result.token_ids) and 0 < s.tokens <= 48 and result.text
    assert s.steps == s.nfe and s.tokens_per_forward == pytest.approx(s.tokens / s.nfe, abs=1e-3)
