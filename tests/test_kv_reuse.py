"""Cross-request KV reuse: the KV of the tokens a request shares with its document's previous
request is kept, and only the rest is computed."""

import dataclasses

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine import load_engine
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.kv import RowKV
from fim_server.engine.prefix_store import PrefixStore, common_prefix
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model
from fim_server.worker.stats import WorkerStats

PREFIX = "".join(f"value_{i} = compute({i}, scale={i % 7})\n" for i in range(40)) + "def total(xs):\n    return "
SUFFIX = "\n\n\nprint(total([1, 2, 3]))\n"
TYPING = ["s", "su", "sum", "sum(", "sum(x", "sum(xs"]


def kv(n: int, fill: float = 0.0) -> RowKV:
    return RowKV([(torch.full((2, n, 4), fill), torch.full((2, n, 4), fill + 1))])


# ---------------------------------------------------------------- the store

def test_store_returns_the_longest_common_prefix_within_the_limit():
    store = PrefixStore()
    store.store("doc", [1, 2, 3, 4, 5], kv(5))
    n, got = store.lookup("doc", [1, 2, 3, 9, 9, 9], limit=10)
    assert n == 3 and got.length == 3
    n, got = store.lookup("doc", [1, 2, 3, 4, 5, 6], limit=2)
    assert n == 2 and got.length == 2
    assert store.lookup("doc", [7, 1, 2], limit=10) == (0, None)
    assert store.lookup("other", [1, 2, 3], limit=10) == (0, None)
    assert store.lookup("", [1, 2, 3], limit=10) == (0, None)
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_store_evicts_the_least_recently_used_document():
    store = PrefixStore(capacity=2)
    store.store("a", [1], kv(1))
    store.store("b", [1], kv(1))
    store.lookup("a", [1], limit=1)                # a is now the most recent
    store.store("c", [1], kv(1))
    assert store.lookup("b", [1], limit=1) == (0, None)
    assert store.lookup("a", [1], limit=1)[0] == 1 and store.lookup("c", [1], limit=1)[0] == 1
    assert len(store) == 2


def test_forget_drops_a_closed_document_at_once():
    store = PrefixStore(capacity=4)
    store.store("a", [1, 2], kv(2))
    store.store("b", [1], kv(1))
    store.forget("a")
    store.forget("never stored")                   # closing a document without KV is fine
    assert store.lookup("a", [1, 2], limit=2) == (0, None)
    assert "b" in store and len(store) == 1


# ---------------------------------------------------------------- diffusion

@pytest.fixture(scope="module", params=[False, True], ids=["unshifted", "shifted"])
def dlm(request, random_dlm_dir):
    lm = load_model(str(random_dlm_dir), kind="diffusion", dtype="float64")
    lm.family = dataclasses.replace(lm.family, shifted=request.param)
    return DiffusionEngine(lm)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_reused_lead_kv_gives_the_full_forward_exactly(dlm, mode):
    """A full forward that takes the lead's KV from a cache instead of computing it gives the
    same logits and captures the same KV, when that cache came from the same layout."""
    dlm.kv_store = PrefixStore()
    cfg = DecodeConfig(cache=mode, max_tokens=12, block_size=6, length="fixed")
    req = InfillRequest(PREFIX, SUFFIX, key="doc")
    first = dlm.start(req, cfg)
    first.canvas[0] = first.canvas[2] = 100
    full = dlm._full_forward([first], capture=True, mode=mode)[id(first)]
    n = first.lead_kv.length
    assert n >= len(first.lead) - 1
    again = dlm.start(InfillRequest(PREFIX, SUFFIX), cfg)
    again.canvas = list(first.canvas)
    again.past = first.lead_kv.head(n - 3)          # reuse all but the last 3 lead positions
    reused = dlm._full_forward([again], capture=True, mode=mode)[id(again)]
    torch.testing.assert_close(reused, full, rtol=0, atol=1e-9)
    for (k1, v1), (k2, v2) in zip(again.kv.layers, first.kv.layers):
        torch.testing.assert_close(k1, k2, rtol=0, atol=1e-9)
        torch.testing.assert_close(v1, v2, rtol=0, atol=1e-9)


def test_follow_up_reuses_the_shared_lead(dlm):
    dlm.kv_store = PrefixStore()
    cfg = DecodeConfig(max_tokens=8, block_size=4)
    first = dlm.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)[0]
    assert first.stats.reused_tokens == 0
    for typed in TYPING[:3]:
        row = dlm.start(InfillRequest(PREFIX + typed, SUFFIX), cfg)
        stored = dlm.kv_store._entries.get("doc").ids
        result = dlm.infill([InfillRequest(PREFIX + typed, SUFFIX, key="doc")], cfg)[0]
        assert 0 < result.stats.reused_tokens == min(common_prefix(stored, row.lead), len(row.lead) - dlm.shifted)
        assert result.stats.reused_tokens >= len(row.lead) - 8          # typing changes only the end


@pytest.mark.parametrize("change", [{"kv_reuse": False}, {"cache": "none"}])
def test_reuse_is_off_when_asked_or_without_a_cache(dlm, change):
    dlm.kv_store = PrefixStore()
    cfg = DecodeConfig(max_tokens=8, block_size=4).replace(**change)
    dlm.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)
    result = dlm.infill([InfillRequest(PREFIX + "s", SUFFIX, key="doc")], cfg)[0]
    assert result.stats.reused_tokens == 0


def test_other_documents_and_cancelled_requests_share_nothing(dlm):
    dlm.kv_store = PrefixStore()
    cfg = DecodeConfig(max_tokens=8, block_size=4)
    dlm.infill([InfillRequest(PREFIX, SUFFIX, key="a")], cfg)
    assert dlm.infill([InfillRequest(PREFIX, SUFFIX, key="b")], cfg)[0].stats.reused_tokens == 0
    dlm.infill([InfillRequest(PREFIX, SUFFIX, key="c")], cfg, should_stop=lambda running: set(running))
    assert dlm.infill([InfillRequest(PREFIX, SUFFIX, key="c")], cfg)[0].stats.reused_tokens == 0


# ---------------------------------------------------------------- AR: exact

@pytest.fixture(scope="module")
def ar():
    return load_engine("ar", dtype="float32")


def test_ar_follow_ups_equal_cold_requests_token_for_token(ar):
    """A causal model's prefix KV depends only on the tokens before it: reuse is exact."""
    cfg = DecodeConfig(engine="ar", max_tokens=16)
    ar.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)
    for typed in TYPING:
        warm = ar.infill([InfillRequest(PREFIX + typed, SUFFIX, key="doc")], cfg)[0]
        cold = ar.infill([InfillRequest(PREFIX + typed, SUFFIX)], cfg)[0]
        assert warm.stats.reused_tokens > warm.stats.prompt_tokens // 2
        assert cold.stats.reused_tokens == 0
        assert warm.token_ids == cold.token_ids


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_engine_forgets_a_closed_document(kind, ar, dlm):
    engine = ar if kind == "ar" else dlm
    engine.kv_store = PrefixStore()
    cfg = DecodeConfig(engine=kind, max_tokens=4, length="fixed")
    engine.infill([InfillRequest(PREFIX, SUFFIX, key="doc"), InfillRequest(PREFIX, SUFFIX, key="other")], cfg)
    assert engine.cached_documents() == 2
    engine.forget("doc")
    assert engine.cached_documents() == 1
    again = engine.infill([InfillRequest(PREFIX + "s", SUFFIX, key="doc")], cfg)[0]
    assert again.stats.reused_tokens == 0                          # computed from scratch


# ---------------------------------------------------------------- block diffusion: exact (causal prompt)

@pytest.fixture(scope="module")
def block():
    return load_engine("block", dtype="float64")


@pytest.mark.parametrize("lossless", [False, True])
def test_block_follow_ups_equal_cold_requests_token_for_token(block, lossless):
    """The block engine's prompt is causal, so its reused KV is exact: follow-ups decode the same
    tokens as cold requests, computing only the prompt tokens after the shared lead (the lossless
    mode too)."""
    cfg = DecodeConfig(engine="block", max_tokens=12, block_size=4, lossless=lossless)
    block.kv_store = PrefixStore()
    assert block.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)[0].stats.reused_tokens == 0
    for typed in TYPING[::2]:
        warm = block.infill([InfillRequest(PREFIX + typed, SUFFIX, key="doc")], cfg)[0]
        cold = block.infill([InfillRequest(PREFIX + typed, SUFFIX)], cfg)[0]
        assert warm.stats.reused_tokens > warm.stats.prompt_tokens // 2 and cold.stats.reused_tokens == 0
        assert warm.token_ids == cold.token_ids


@pytest.mark.parametrize("kind,extra", [("ar", {}), ("block", {"block_size": 4})])
def test_batch_mixing_reused_and_fresh_rows_equals_single_runs(request, kind, extra):
    """The causal-prompt engines: a batch of a reusing row, a new document and an unkeyed row
    decodes as each row alone."""
    engine = request.getfixturevalue(kind)
    cfg = DecodeConfig(engine=kind, max_tokens=8, **extra)
    engine.kv_store = PrefixStore()
    engine.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)
    batch = [InfillRequest(PREFIX + "sum(", SUFFIX, key="doc"),
             InfillRequest("import os\n\ndef main():\n    ", "\n", key="new"),
             InfillRequest(PREFIX[:300], SUFFIX)]
    together = engine.infill(batch, cfg)
    assert together[0].stats.reused_tokens > 0 and together[1].stats.reused_tokens == 0
    alone = [engine.infill([dataclasses.replace(r, key="")], cfg)[0] for r in batch]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_block_reuse_is_off_when_asked(block):
    block.kv_store = PrefixStore()
    for change in ({"kv_reuse": False}, {"kv_reuse": False, "lossless": True}):
        cfg = DecodeConfig(engine="block", max_tokens=4, block_size=4, **change)
        block.infill([InfillRequest(PREFIX, SUFFIX, key="doc")], cfg)
        assert block.infill([InfillRequest(PREFIX + "s", SUFFIX, key="doc")], cfg)[0].stats.reused_tokens == 0


# ---------------------------------------------------------------- worker stats

def test_worker_stats_report_the_share_of_reused_prompt_tokens():
    stats = WorkerStats({"model": "m"})
    stats.served(10.0, {"nfe": 4, "tokens": 4, "prompt_tokens": 100, "reused_tokens": 0})
    stats.served(5.0, {"nfe": 4, "tokens": 4, "prompt_tokens": 100, "reused_tokens": 80})
    stats.served(1.0, None)                                        # typed-ahead result reuse
    snap = stats.snapshot(queued=0, running=0)["kv_reuse"]
    assert snap == {"requests": 1, "tokens": 80, "prompt_tokens": 200, "share": 0.4}
