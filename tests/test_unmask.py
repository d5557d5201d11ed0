import torch

from fim_server.config import DecodeConfig
from fim_server.engine.unmask import FactorRule, ThresholdRule, make_rule, most_confident


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
