"""Length policies on hand-made cases: DreamOn expand/delete, fixed canvas with an end token,
single-line stop, with a scripted model whose predictions are known."""

from types import SimpleNamespace

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine.canvas import Canvas
from fim_server.engine.kv import RowKV
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model


class ScriptedDLM(torch.nn.Module):
    """Predicts, for the canvas between `lead` and `suffix` tokens, the target middle:
    too short a canvas -> every mask says <|expand|>; too long -> the surplus says <|delete|>
    (or `end` under the fixed policy). Confidence of each prediction is `conf`."""

    def __init__(self, vocab, lead, suffix, target, ids, conf=0.95, end=None):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)
        self.lead, self.suffix, self.target, self.ids, self.conf = lead, suffix, target, ids, conf
        self.end = end if end is not None else ids.delete
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        self.calls += 1
        B, T = input_ids.shape
        canvas = input_ids[0, self.lead:T - self.suffix].tolist()
        want = []
        for j in range(len(canvas)):
            if len(canvas) < len(self.target):
                want.append(self.ids.expand)
            elif j < len(self.target):
                want.append(self.target[j])
            else:
                want.append(self.end)
        logits = torch.full((B, T, self.config.vocab_size), -20.0)
        low = torch.log(torch.tensor((1 - self.conf) / (self.config.vocab_size - 1)))
        high = torch.log(torch.tensor(self.conf))
        logits[:] = low
        for j, tok in enumerate(want):
            if j < len(self.target):               # runner-up: the token itself (wins if expand is banned)
                logits[0, self.lead + j, self.target[j]] = high - 1.0
            logits[0, self.lead + j, tok] = high
        return SimpleNamespace(logits=logits, past_key_values=None)


@pytest.fixture()
def scripted(random_dlm_dir):
    lm = load_model(str(random_dlm_dir), kind="diffusion")

    def make(prefix, suffix, middle, **kw):
        tok = lm.tokenizer
        lead = len(tok.encode(prefix, add_special_tokens=False))
        suf = len(tok.encode(suffix, add_special_tokens=False))
        target = tok.encode(middle, add_special_tokens=False)
        lm.model = ScriptedDLM(len(tok), lead, suf, target, lm.ids, **kw)
        return DiffusionEngine(lm), target

    return make


def test_expand_grows_a_short_canvas_to_the_middle(scripted):
    middle = "total = sum(values) / len(values)"
    engine, target = scripted("def mean(values):\n    ", "\n", middle)
    assert len(target) > 4
    cfg = DecodeConfig(cache="none", initial_length=2, max_tokens=64, length="expand")
    res = engine.infill([InfillRequest("def mean(values):\n    ", "\n")], cfg)[0]
    assert res.token_ids == target
    assert res.text == middle
    assert res.stats.stop_reason == "end"
    assert res.stats.nfe < len(target)          # confident expansions and tokens commit in parallel


def test_delete_shrinks_a_long_canvas(scripted):
    engine, target = scripted("x = ", "\n", "42")
    cfg = DecodeConfig(cache="none", initial_length=16, max_tokens=64, length="expand")
    res = engine.infill([InfillRequest("x = ", "\n")], cfg)[0]
    assert res.text == "42" and res.token_ids == target


def test_expand_stops_at_max_tokens(scripted):
    engine, target = scripted("s = '", "'\n", "abc def ghi jkl mno pqr stu vwx yz " * 3)
    cfg = DecodeConfig(cache="none", initial_length=2, max_tokens=8, length="expand")
    res = engine.infill([InfillRequest("s = '", "'\n")], cfg)[0]
    assert res.token_ids == target[:8]
    assert res.stats.stop_reason == "length"


def test_fixed_policy_cuts_at_first_end_token_and_stops_early(scripted):
    engine, target = scripted("x = ", "\n", "42", conf=0.5)      # 0.5 < tau: one commit per step
    cfg = DecodeConfig(cache="none", max_tokens=24, length="fixed", block_size=4, threshold=0.9)
    res = engine.infill([InfillRequest("x = ", "\n")], cfg)[0]
    assert res.token_ids == target
    # stops as soon as the end token is settled with everything before it: not 24 steps
    assert res.stats.stop_reason == "end" and res.stats.nfe < 24


def test_single_line_stops_at_the_end_of_the_line(scripted):
    middle = "a = 1\nb = 2\nc = 3\nd = 4\n"
    engine, target = scripted("def f():\n    ", "", middle, conf=0.5)
    cfg = DecodeConfig(cache="none", max_tokens=32, length="fixed", block_size=4, single_line=True)
    res = engine.infill([InfillRequest("def f():\n    ", "")], cfg)[0]
    assert res.text == "a = 1"
    assert res.stats.stop_reason == "line"
    assert res.stats.nfe < len(target)


def _canvas(ids, n, expand=True, block=4):
    return Canvas(lead=[1], canvas=[ids.mask] * n, suffix=[2], ids=ids, expand_policy=expand,
                  max_tokens=32, block_size=block)


def test_canvas_edits(random_dlm_dir):
    ids = load_model(str(random_dlm_dir), kind="diffusion").ids
    c = _canvas(ids, 6)
    assert (c.block_start, c.block_end) == (0, 4)
    c.commit([0, 2], [ids.expand, 77], "dual")            # slot 0 -> two masks, slot 2 (now 3) = 77
    assert c.canvas == [ids.mask, ids.mask, ids.mask, 77, ids.mask, ids.mask, ids.mask]
    assert c.block_end == 5 and c.moved and c.shift == 1 and not c.stale   # the suffix moved by one
    c.kv = RowKV([])                                             # as after a refresh
    assert c.needs_refresh(0) and not c.needs_refresh(0, kv_shift=True)
    c.commit([1], [ids.delete], "prefix")
    assert c.canvas == [ids.mask, ids.mask, 77, ids.mask, ids.mask, ids.mask]
    assert c.block_end == 4 and c.shift == 1                     # prefix mode caches nothing behind the block
    fixed = _canvas(ids, 6, expand=False)
    fixed.commit([0, 1, 3], [10, ids.delete, 11], "dual")  # fixed: delete is the end token, kept in place
    assert fixed.end_index() == 1 and fixed.middle_ids() == [10]


def test_end_guard_stops_a_tail_collapse(scripted):
    """A model that is most confident about deleting the tail must not delete everything."""
    engine, target = scripted("x = ", "\n", "42", conf=0.9)
    res = engine.infill([InfillRequest("x = ", "\n")], DecodeConfig(cache="none", initial_length=8, threshold=0.5))[0]
    assert res.text == "42"
    c = _canvas(load_model_ids(engine), 6)
    c.commit([0, 1], [10, 11], "dual")
    c.commit([2], [engine.ids.delete], "dual")            # first undecided slot: the middle ends there
    assert c.canvas == [10, 11] and c.first_mask() == 2
    assert c.stale and c.shift == -4                      # cached slots behind the block were cut away


def load_model_ids(engine):
    return engine.ids
