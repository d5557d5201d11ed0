"""Early commit and the entropy-bounded rule inside the diffusion loop, on a scripted model whose
distribution at every middle slot is known: the target token with probability TOP, a runner-up
with SECOND, the rest spread evenly."""

import math
from types import SimpleNamespace

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model

TOP, SECOND = 0.6, 0.1              # top1 - top2 gap 0.5
PREFIX, SUFFIX, MIDDLE = "def f(x):\n    return ", "\n", "x + 1 if x else 0"


class SlotModel(torch.nn.Module):
    """Logits for a full layout [lead][canvas][suffix] (cache "none", unshifted)."""

    def __init__(self, vocab, lead, target):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)
        self.lead, self.target = lead, target

    def forward(self, input_ids, **kwargs):
        B, T = input_ids.shape
        V = self.config.vocab_size
        probs = torch.full((B, T, V), (1 - TOP - SECOND) / (V - 2), dtype=torch.float64)
        for j, tok in enumerate(self.target):
            probs[:, self.lead + j, tok] = TOP
            probs[:, self.lead + j, (tok + 1) % V] = SECOND
        return SimpleNamespace(logits=probs.log(), past_key_values=None)


@pytest.fixture(scope="module")
def scripted(random_dlm_dir):
    lm = load_model(str(random_dlm_dir), kind="diffusion")
    tok = lm.tokenizer
    target = tok.encode(MIDDLE, add_special_tokens=False)
    assert not set(target) & set(lm.ids.banned) and len(target) >= 6
    lm.model = SlotModel(len(tok), len(tok.encode(PREFIX, add_special_tokens=False)), target)
    return DiffusionEngine(lm), target


def run(engine, target, **options):
    base = DecodeConfig(cache="none", length="fixed", max_tokens=len(target), block_size=len(target), threshold=0.9)
    return engine.infill([InfillRequest(PREFIX, SUFFIX)], base.replace(**options))[0]


def test_without_early_commit_one_token_per_step(scripted):
    engine, target = scripted
    r = run(engine, target)
    assert r.token_ids == target
    assert r.stats.nfe == len(target) and r.stats.early_commits == 0     # 0.6 < tau: one per step


def test_early_commit_settles_the_block_in_one_step(scripted):
    engine, target = scripted
    r = run(engine, target, early_commit=0.45)
    assert r.token_ids == target
    assert r.stats.nfe == 1 and r.stats.early_commits == 1


def test_early_commit_waits_while_a_gap_is_too_small(scripted):
    engine, target = scripted
    r = run(engine, target, early_commit=0.55)
    assert r.token_ids == target
    assert r.stats.nfe == len(target) and r.stats.early_commits == 0


def test_early_commit_once_per_block(scripted):
    engine, target = scripted
    block = math.ceil(len(target) / 2)
    r = run(engine, target, early_commit=0.45, block_size=block)
    assert r.token_ids == target
    assert r.stats.nfe == 2 and r.stats.early_commits == 2


@pytest.mark.parametrize("per_step", [1, 2, 3])
def test_eb_rule_commits_as_many_as_the_entropy_bound_allows(scripted, per_step):
    """Every slot has the same entropy H: k slots cost (k - 1) H, so gamma = (k - 0.5) H takes k."""
    engine, target = scripted
    V = engine.model.config.vocab_size
    rest = (1 - TOP - SECOND) / (V - 2)
    h = -(TOP * math.log(TOP) + SECOND * math.log(SECOND) + (V - 2) * rest * math.log(rest))
    r = run(engine, target, unmask="eb", eb_gamma=(per_step - 0.5) * h)
    assert r.token_ids == target
    assert r.stats.nfe == math.ceil(len(target) / per_step)
