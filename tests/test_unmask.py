import math

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine.unmask import (EntropyBoundRule, FactorRule, ThresholdRule, choose, make_rule,
                                      most_confident, settled_rows)


def test_threshold_commits_confident_masked_positions_and_at_least_one():
    conf = torch.tensor([[0.95, 0.50, 0.91, 0.99],
                         [0.30, 0.20, 0.10, 0.05]])
    masked = torch.tensor([[True, True, True, False],      # 0.99 is already committed
                           [True, True, True, True]])
    got = ThresholdRule(0.9).select(conf, masked)
    assert got.tolist() == [[True, False, True, False],
                            [True, False, False, False]]   # nothing passes: the most confident


def test_threshold_row_without_masks_commits_nothing():
    conf = torch.tensor([[0.99, 0.98]])
    masked = torch.tensor([[False, False]])
    assert not ThresholdRule(0.5).select(conf, masked).any()
    assert not most_confident(conf, masked).any()


def test_factor_rule_largest_n_whose_nth_confidence_passes():
    # sorted: 0.9, 0.8, 0.7, 0.2 ; f=1 -> bars 1-1/2=0.5, 1-1/3=0.667, 1-1/4=0.75, 1-1/5=0.8
    # n=1: .9>=.5 yes; n=2: .8>=.667 yes; n=3: .7>=.75 no; n=4: .2>=.8 no -> n=2
    conf = torch.tensor([[0.7, 0.9, 0.2, 0.8]])
    masked = torch.ones_like(conf, dtype=torch.bool)
    assert FactorRule(1.0).select(conf, masked).tolist() == [[False, True, False, True]]


def test_factor_rule_largest_n_even_if_a_smaller_n_fails():
    # sorted 0.6, 0.6, 0.6 with f=2: bars 0.0, 0.333, 0.5 -> all pass -> n=3
    conf = torch.tensor([[0.6, 0.6, 0.6, 0.1]])
    masked = torch.tensor([[True, True, True, False]])
    assert FactorRule(2.0).select(conf, masked).tolist() == [[True, True, True, False]]
    # f tiny: bar ~1 for every n -> only the forced most confident one
    assert FactorRule(1e-6).select(conf, masked).sum().item() == 1


def test_make_rule_follows_config():
    assert isinstance(make_rule(DecodeConfig(unmask="factor")), FactorRule)
    assert isinstance(make_rule(DecodeConfig()), ThresholdRule)


# --- entropy-bounded rule and early commit -----------------------------------------------

def dist(*rows):
    """[B, L, V] probabilities from nested lists of per-position distributions."""
    return torch.tensor(rows, dtype=torch.float64)


def entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


SHARP = [0.97, 0.01, 0.01, 0.01]      # low entropy
SHARP2 = [0.96, 0.02, 0.01, 0.01]
MID = [0.7, 0.1, 0.1, 0.1]
FLAT = [0.25, 0.25, 0.25, 0.25]       # entropy ln 4


def test_eb_commits_the_most_confident_while_entropy_sum_less_max_is_under_gamma():
    probs = dist([FLAT, SHARP, MID, SHARP2])
    conf = probs.max(dim=-1).values
    masked = torch.ones(1, 4, dtype=torch.bool)
    h1, h2, h_mid = entropy(SHARP), entropy(SHARP2), entropy(MID)
    assert h1 < h2 < h_mid < entropy(FLAT)
    # by confidence: SHARP, SHARP2, MID, FLAT; sum - max after each rank:
    #   1: 0,  2: h1,  3: h1 + h2 (max is MID),  4: h1 + h2 + h_mid (max is FLAT)
    cases = [
        (0.5 * h1, [[False, True, False, False]]),
        (h1, [[False, True, False, True]]),
        (h1 + h2, [[False, True, True, True]]),
        (h1 + h2 + h_mid, [[True, True, True, True]]),
    ]
    for gamma, want in cases:
        assert EntropyBoundRule(gamma + 1e-9).select(conf, masked, probs).tolist() == want, gamma
        if gamma > 0.5 * h1:      # just under the bound: one position fewer
            fewer = EntropyBoundRule(gamma - 1e-6).select(conf, masked, probs)
            assert fewer.sum() == sum(want[0]) - 1


def test_eb_ignores_committed_positions_and_always_commits_one():
    probs = dist([SHARP, FLAT, FLAT], [FLAT, FLAT, FLAT])
    conf = probs.max(dim=-1).values
    masked = torch.tensor([[False, True, True], [True, True, True]])
    got = EntropyBoundRule(0.0).select(conf, masked, probs)
    # row 0: the committed SHARP position neither counts nor is picked; gamma 0 still commits one
    assert got.sum(dim=1).tolist() == [1, 1]
    assert not got[0, 0]
    # gamma = ln 4: a second FLAT position adds ln 4 to sum - max -> two per row
    got = EntropyBoundRule(entropy(FLAT) + 1e-9).select(conf, masked, probs)
    assert got.sum(dim=1).tolist() == [2, 2] and not got[0, 0]
    # no masked position: nothing
    assert not EntropyBoundRule(10.0).select(conf, torch.zeros_like(masked), probs).any()


def test_eb_rule_needs_the_distributions():
    with pytest.raises(ValueError, match="probabilities"):
        EntropyBoundRule(1.0).select(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))


def test_make_rule_eb():
    rule = make_rule(DecodeConfig(unmask="eb", eb_gamma=0.25))
    assert isinstance(rule, EntropyBoundRule) and rule.gamma == 0.25
    with pytest.raises(ValueError, match="eb_gamma"):
        DecodeConfig(eb_gamma=-1.0)


def test_settled_rows_need_every_masked_gap_to_pass():
    # gaps: SHARP .96, MID .6, FLAT 0
    probs = dist([SHARP, MID, FLAT], [SHARP, MID, FLAT], [SHARP, SHARP, SHARP])
    masked = torch.tensor([[True, True, False],          # FLAT already committed: gaps .96, .6
                           [True, True, True],           # FLAT masked: never settles above 0
                           [False, False, False]])       # nothing masked: nothing to commit
    assert settled_rows(probs, masked, 0.6).tolist() == [True, False, False]
    assert settled_rows(probs, masked, 0.61).tolist() == [False, False, False]


def test_choose_adds_early_commit_on_top_of_the_rule():
    probs = dist([SHARP, MID, MID], [SHARP, MID, FLAT])
    conf = probs.max(dim=-1).values
    masked = torch.ones(2, 3, dtype=torch.bool)
    rule = ThresholdRule(0.9)                                # alone: only the SHARP position
    commit, early = choose(rule, conf, masked, probs, 0.0)
    assert commit.tolist() == [[True, False, False]] * 2 and early.tolist() == [False, False]
    commit, early = choose(rule, conf, masked, probs, 0.5)
    assert commit.tolist() == [[True, True, True], [True, False, False]]
    assert early.tolist() == [True, False]
    # when the rule already takes every masked position, early commit adds nothing and is not counted
    commit, early = choose(ThresholdRule(0.5), conf, masked, probs, 0.5)
    assert commit[0].all() and early.tolist() == [False, False]
