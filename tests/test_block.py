"""The block-diffusion engine against a plain reference: full forwards with the block-causal mask,
both logit conventions, batches, cancellation, and an exact cache."""

import dataclasses

import pytest
import torch

from fim_server.engine.block import BlockCache, BlockEngine
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model
from fim_server.models.random_init import build_random_checkpoint
from fim_server.wire.options import DecodeConfig

REQUESTS = [
    InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "r0"),
    InfillRequest("class Stack:\n    def push(self, item):\n        ", "\n    def pop(self):\n        return 1\n", "r1"),
    InfillRequest("for i in range(10):\n", "", "r2"),
]


@pytest.fixture(scope="module")
def block_dir(tmp_path_factory):
    return build_random_checkpoint(tmp_path_factory.mktemp("block"), "fim-tiny-block", seed=3)


@pytest.fixture(scope="module", params=[False, True], ids=["unshifted", "shifted"])
def engine(request, block_dir):
    lm = load_model(str(block_dir), kind="block", dtype="float64")
    lm.family = dataclasses.replace(lm.family, shifted=request.param)
    return BlockEngine(lm)


def block_causal_mask(prompt_len: int, n: int, block: int) -> torch.Tensor:
    """[1, 1, n, n]: the prompt is causal; a middle slot sees the prompt, its own block and
    every earlier block."""
    pos = torch.arange(n)
    blk = torch.where(pos < prompt_len, -1, (pos - prompt_len) // block)
    causal = pos[None, :] <= pos[:, None]
    middle = (pos[:, None] >= prompt_len) & ((pos[None, :] < prompt_len) | (blk[None, :] <= blk[:, None]))
    return (causal | middle)[None, None]


def full_logits(engine, seq: list[int], prompt_len: int, block: int) -> torch.Tensor:
    """Logits [n, V] of one full forward over seq, no cache."""
    n = len(seq)
    out = engine.model(input_ids=torch.tensor([seq]), position_ids=torch.arange(n)[None],
                       attention_mask=block_causal_mask(prompt_len, n, block))
    return out.logits[0]


def slot_logits(engine, logits: torch.Tensor, at: int, width: int) -> torch.Tensor:
    """The logits predicting sequence slots at..at+width-1, by the engine's convention."""
    shift = 1 if engine.shifted else 0
    return logits[at - shift:at - shift + width]


def reference_decode(engine, req, max_tokens, block) -> list[int]:
    """One full forward per step; commit the single most confident masked slot of the block;
    end tokens only at the first masked slot (the end guard)."""
    row = engine.start(req, DecodeConfig(engine="block", max_tokens=max_tokens, block_size=block))
    prompt, middle, mask = row.prompt, [], engine.ids.mask
    ends = set(engine.ids.end_of_middle)
    while len(middle) < max_tokens:
        width = min(block, max_tokens - len(middle))
        slots = [mask] * width
        while mask in slots:
            logits = full_logits(engine, prompt + middle + slots, len(prompt), block)
            logits = slot_logits(engine, logits, len(prompt) + len(middle), width).float()
            logits = logits.masked_fill(engine.banned, float("-inf"))
            first = slots.index(mask)
            for j in range(width):
                if j != first:
                    logits[j, list(ends)] = float("-inf")
            conf, tokens = torch.softmax(logits, dim=-1).max(dim=-1)
            open_slots = [j for j in range(width) if slots[j] == mask]
            j = max(open_slots, key=lambda k: conf[k].item())
            slots[j] = int(tokens[j])
            settled = slots[:slots.index(mask)] if mask in slots else slots
            end = next((k for k, t in enumerate(settled) if t in ends), None)
            if end is not None:
                return middle + settled[:end]
        middle += slots
    return middle


@pytest.mark.parametrize("block", [1, 4, 6])
def test_one_token_per_step_equals_the_reference_loop(engine, block):
    config = DecodeConfig(engine="block", max_tokens=12, block_size=block, threshold=1.0, repetition_guard=False)
    for req in REQUESTS:
        got = engine.infill([req], config)[0]
        assert got.token_ids == reference_decode(engine, req, 12, block)
        assert got.stats.nfe == 1 + len(got.token_ids) or got.stats.stop_reason == "end"   # the prefill, a step a token


def test_the_cache_is_exact(engine):
    """A cached step's logits equal a full forward's (float64), in the first block and after a
    settled block was written into the cache."""
    block, mask = 4, engine.ids.mask
    row = engine.start(REQUESTS[0], DecodeConfig(engine="block", max_tokens=8, block_size=block))
    cache = BlockCache(engine, [row])
    first = torch.tensor([[mask, 7, mask, 9]])
    got = cache.step(first)[0]
    want = slot_logits(engine, full_logits(engine, row.prompt + first[0].tolist(), len(row.prompt), block),
                       len(row.prompt), block)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    settled, second = torch.tensor([[5, 7, 11, 9]]), torch.tensor([[mask, mask, 13, mask]])
    cache.settle(settled)
    for _ in range(2):                                   # the block's first step, then a cached one
        got = cache.step(second)[0]
        seq = row.prompt + settled[0].tolist() + second[0].tolist()
        want = slot_logits(engine, full_logits(engine, seq, len(row.prompt), block), len(row.prompt) + block, block)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    assert cache.cache.get_seq_length() == len(row.prompt) + block     # the settled block, written once


def test_a_block_sees_the_suffix_and_never_a_later_block(engine):
    """Block 0's logits change with the suffix (PSM: the prompt holds it) and not with what a
    later block holds; a settled block's cached KV does not depend on the next block either."""
    block, mask = 4, engine.ids.mask
    config = DecodeConfig(engine="block", max_tokens=8, block_size=block)
    a = engine.start(REQUESTS[0], config)
    b = engine.start(InfillRequest(REQUESTS[0].prefix, "\n\nprint(add(3, 4))\n"), config)
    slots = torch.full((1, block), mask)
    assert not torch.allclose(BlockCache(engine, [a]).step(slots), BlockCache(engine, [b]).step(slots))
    seq = a.prompt + [5, 7, 11, 9]
    later = [full_logits(engine, seq + tail, len(a.prompt), block)[:len(seq)] for tail in ([mask] * 4, [3, 4, 5, 6])]
    torch.testing.assert_close(later[0], later[1], rtol=0, atol=0)
    kept = []
    for nxt in ([mask] * 4, [3, 4, 5, 6]):
        cache = BlockCache(engine, [a])
        cache.settle(torch.tensor([[5, 7, 11, 9]]))
        cache.step(torch.tensor([nxt]))
        kept.append([layer.keys.clone() for layer in cache.cache.layers])
    assert all(torch.equal(x, y) for x, y in zip(*kept))


@pytest.mark.parametrize("threshold", [0.9, 0.0])
def test_batch_of_n_equals_batch_of_one(engine, threshold):
    config = DecodeConfig(engine="block", max_tokens=10, block_size=4, threshold=threshold)
    together = engine.infill(REQUESTS, config)
    alone = [engine.infill([r], config)[0] for r in REQUESTS]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.stats.nfe for r in together] == [r.stats.nfe for r in alone]


def test_parallel_commits_take_fewer_forwards(engine):
    """threshold 0: every masked slot commits in one step, so a block costs one forward."""
    config = DecodeConfig(engine="block", max_tokens=12, block_size=4, threshold=0.0)
    result = engine.infill([REQUESTS[0]], config)[0]
    if result.stats.stop_reason == "length":
        assert result.stats.nfe == 1 + 3 and result.stats.tokens_per_forward == 3.0     # the prefill, 3 blocks
    else:
        assert result.stats.nfe <= 1 + 3


def test_cancellation_between_steps(engine):
    config = DecodeConfig(engine="block", max_tokens=12, block_size=4, threshold=1.0)
    calls = []

    def stop_first(running):
        calls.append(list(running))
        return {0} if len(calls) >= 2 else set()

    cancelled, other = engine.infill(REQUESTS[:2], config, should_stop=stop_first)
    assert cancelled.stats.cancelled and cancelled.stats.stop_reason == "cancelled"
    assert cancelled.stats.nfe < 12
    assert other.token_ids == engine.infill([REQUESTS[1]], config)[0].token_ids


def test_single_line_stops_at_the_line_end(engine):
    config = DecodeConfig(engine="block", max_tokens=24, block_size=4, single_line=True)
    result = engine.infill([REQUESTS[0]], config)[0]
    assert "\n" not in result.text.strip("\n")
    assert result.stats.stop_reason in ("line", "end", "repeat", "length", "empty")
    if result.stats.stop_reason == "line":
        assert "\n" in engine.tok.decode(result.token_ids).lstrip()


def test_the_bundled_block_model_loads_by_default_and_decodes():
    from fim_server.engine import load_engine

    engine = load_engine("block", device="cpu")
    assert engine.lm.family.name == "fim-tiny-block" and engine.shifted
    req = InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n")
    # the guard off: a loop it cut would have cost forwards for tokens the middle no longer holds
    result = engine.infill([req], DecodeConfig(engine="block", max_tokens=32, block_size=4,
                                               repetition_guard=False))[0]
    assert result.text and result.stats.stop_reason in ("end", "length")
    assert 2 <= result.stats.nfe <= 1 + result.stats.tokens + 1    # the prefill, then a forward per token at most
