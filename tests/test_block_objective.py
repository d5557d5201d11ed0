"""The block-diffusion training layout: what each token may attend to and which logits predict
which target, checked against the engine's own rules."""

import random

import torch

from fim_server.train.block import IGNORE, BlockRow, block_row, complementary_masks, layout, pad_to_blocks

MASK, END = 99, 0


def test_complementary_masks_cover_every_slot_once():
    rng = random.Random(0)
    for n in (1, 5, 17):
        a, b = complementary_masks(n, rng)
        assert all(x != y for x, y in zip(a, b)) and any(a)


def test_the_middle_is_padded_to_whole_blocks_with_the_end_token():
    assert pad_to_blocks([5, 6, 7, END], END, 4) == [5, 6, 7, END]
    assert pad_to_blocks([5, 6, 7, 8, END], END, 4) == [5, 6, 7, 8, END, END, END, END]


def test_attention_is_causal_in_the_prompt_and_block_causal_in_the_middle():
    prompt, middle, block = [10, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27], 4
    ids, positions, attend, targets, source = layout(BlockRow(prompt, middle), block, MASK, random.Random(1))
    P, n = len(prompt), len(middle)
    assert ids[:P + n] == prompt + middle and len(ids) == P + 3 * n
    assert positions[P + n:P + 2 * n] == list(range(P, P + n))           # a copy sits at the middle's positions
    assert attend[1, 0] and not attend[0, 1]                              # causal prompt
    clean0, clean1 = P, P + block                                         # first slots of clean blocks 0, 1
    assert attend[clean0, clean0 + 3] and not attend[clean0, clean1]     # bidirectional in a block, not past it
    assert attend[clean1, clean0]                                         # a later block sees an earlier one
    noisy_a1 = P + n + block                                              # copy A, block 1, slot 0
    assert attend[noisy_a1, clean0] and not attend[noisy_a1, clean1]     # earlier clean blocks only
    assert attend[noisy_a1, noisy_a1 + 3] and not attend[noisy_a1, P + n]    # own noisy block only
    assert not attend[noisy_a1, P + 2 * n + block]                        # never the other copy
    assert not attend[clean0, P + n]                                      # clean tokens never see noise


def test_targets_are_the_masked_slots_and_logits_are_shifted():
    prompt, middle, block = [10, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27], 4
    ids, _, _, targets, source = layout(BlockRow(prompt, middle), block, MASK, random.Random(2))
    P, n = len(prompt), len(middle)
    for copy in (0, 1):
        start = P + n * (copy + 1)
        for j in range(n):
            i = start + j
            masked = ids[i] == MASK
            assert targets[i] == (middle[j] if masked else IGNORE)
            # slot 0 of a block: the clean token before it; else the slot before, in this copy
            assert source[i] == (P + j - 1 if j % block == 0 else i - 1)
    # complementary: every middle token is a target exactly once over the two copies
    assert sorted(t for t in targets if t != IGNORE) == sorted(middle)


def test_block_padding_is_input_only():
    row = block_row([10, 11], [20, 21, END], END, 4)
    assert row.middle == [20, 21, END, END] and row.length == 3
    ids, _, _, targets, _ = layout(row, 4, MASK, random.Random(3))
    P, n = 2, 4
    for copy in (0, 1):
        assert targets[P + n * (copy + 1) + 3] == IGNORE              # the padding slot is never a target
    assert sorted(t for t in targets if t != IGNORE) == sorted([20, 21, END])
