"""The block-diffusion objective (Fast-dLLM v2 / SDAR style), for a model that starts from the AR twin.

One training row holds a PSM prompt, the clean middle and two noisy copies of it:

    [pre] P [suf] S [mid] | m_0 .. m_n (clean, + end, padded to whole blocks) | noisy copy A | noisy copy B

    prompt        causal, as the engine prefills it
    clean block b sees the prompt, the clean blocks before it and itself (bidirectional): exactly
                  what the engine caches for a settled block
    noisy block b sees the prompt, the clean blocks before b and its own noisy block: what the
                  engine's active block sees
    copies A, B   complementary masks (Fast-dLLM v2): a slot masked in A is clean in B, so every
                  middle token is a target in each pass

Logits are shifted (the AR head's meaning is kept): a noisy slot j > 0 is predicted at slot j - 1
of its copy; slot 0 of block b at the clean token before the block (the prompt's last token for
b = 0), which sees no noisy slot: the first slot of a block stays an AR prediction. The loss is
cross entropy on the masked slots, plus dParallel's certainty forcing: an entropy penalty on the
masked slots the model already gets right, which pushes confidence up where it is deserved.

With a teacher (`--distill-from`, the AR twin), the middle is the teacher's own greedy middle for
the same prompt (sequence-level distillation: deterministic targets the student can match).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


CERTAINTY_TEMPERATURE = 0.5  # dParallel: the entropy is taken of softmax(logits / 0.5)


@dataclass
class BlockRow:
    prompt: list[int]        # PSM prompt ids, ending with <fim_middle>
    middle: list[int]        # middle ids, end token included, padded with it to whole blocks
    length: int = 0          # slots that are targets: the middle up to its first end token (0: all)


def pad_to_blocks(middle: list[int], end: int, block: int) -> list[int]:
    """The middle padded with the end token to a multiple of the block size (the padding is
    input only: no target, as Fast-dLLM v2 excludes its block padding from the loss)."""
    return middle + [end] * (-len(middle) % block)


def block_row(prompt: list[int], middle: list[int], end: int, block: int) -> BlockRow:
    return BlockRow(prompt, pad_to_blocks(middle, end, block), length=len(middle))


def complementary_masks(n: int, rng: random.Random) -> tuple[list[bool], list[bool]]:
    """Copy A masks each slot with probability t ~ U(0.05, 1); copy B masks the rest."""
    t = rng.uniform(0.05, 1.0)
    a = [rng.random() < t for _ in range(n)]
    if not any(a):
        a[rng.randrange(n)] = True
    return a, [not x for x in a]


def layout(row: BlockRow, block: int, mask_id: int, rng: random.Random):
    """One training row: (ids, positions, attention [T, T] bool, targets [T], logit source [T]).
    targets[i] is the token noisy slot i must predict (IGNORE elsewhere); source[i] is the
    position whose logits predict it (shifted)."""
    p, m = row.prompt, row.middle
    n, P = len(m), len(p)
    masks = complementary_masks(n, rng)
    copies = [[mask_id if masked else tok for tok, masked in zip(m, mk)] for mk in masks]
    ids = p + m + copies[0] + copies[1]
    T = len(ids)
    positions = list(range(P + n)) + list(range(P, P + n)) * 2
    # per token: kind (0 prompt, 1 clean, 2 copy A, 3 copy B) and middle block (-1 for the prompt)
    kind = torch.tensor([0] * P + [1] * n + [2] * n + [3] * n)
    blk = torch.tensor([-1] * P + [j // block for j in range(n)] * 3)
    order = torch.arange(T)
    q_kind, k_kind = kind[:, None], kind[None, :]
    q_blk, k_blk = blk[:, None], blk[None, :]
    prompt_keys = k_kind == 0
    attend = torch.zeros((T, T), dtype=torch.bool)
    attend |= (q_kind == 0) & prompt_keys & (order[None, :] <= order[:, None])        # causal prompt
    attend |= (q_kind == 1) & (prompt_keys | ((k_kind == 1) & (k_blk <= q_blk)))      # clean: block-causal
    noisy = q_kind >= 2
    attend |= noisy & (prompt_keys | ((k_kind == 1) & (k_blk < q_blk)) | ((k_kind == q_kind) & (k_blk == q_blk)))
    targets = [IGNORE] * (P + n)
    source = [0] * (P + n)
    length = row.length or n
    for c, mk in enumerate(masks):
        start = P + n * (c + 1)                     # where this copy begins
        for j in range(n):
            targets.append(m[j] if mk[j] and j < length else IGNORE)
            # slot 0 of a block: the clean token before it (prompt's last for block 0)
            source.append(P + j - 1 if j % block == 0 else start + j - 1)
    return ids, positions, attend, targets, source


def collate(rows: list[BlockRow], block: int, mask_id: int, pad: int, rng: random.Random):
    """Right-padded batch: ids, positions [B, T], attention [B, 1, T, T], targets, source [B, T]."""
    parts = [layout(r, block, mask_id, rng) for r in rows]
    T = max(len(x[0]) for x in parts)
    B = len(rows)
    ids = torch.full((B, T), pad, dtype=torch.long)
    positions = torch.zeros((B, T), dtype=torch.long)
    attend = torch.zeros((B, 1, T, T), dtype=torch.bool)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    source = torch.zeros((B, T), dtype=torch.long)
    for b, (x, pos, att, tgt, src) in enumerate(parts):
        n = len(x)
        ids[b, :n], positions[b, :n] = torch.tensor(x), torch.tensor(pos)
        attend[b, 0, :n, :n] = att
        attend[b, 0, n:, 0] = True                  # padding rows attend somewhere: no NaN softmax
        targets[b, :n], source[b, :n] = torch.tensor(tgt), torch.tensor(src)
    return ids, positions, attend, targets, source


def block_loss(model, ids, positions, attend, targets, source, certainty: float = 0.0) -> torch.Tensor:
    """Cross entropy on the masked noisy slots (+ certainty forcing on the ones already right)."""
    logits = model(input_ids=ids, position_ids=positions, attention_mask=attend).logits      # [B, T, V]
    picked = logits.gather(1, source[..., None].expand(-1, -1, logits.shape[-1]))           # [B, T, V]
    keep = targets != IGNORE                                                                 # [B, T]
    scores, labels = picked[keep].float(), targets[keep]                                     # [N, V], [N]
    loss = F.cross_entropy(scores, labels)
    if certainty > 0:
        logp = (scores / CERTAINTY_TEMPERATURE).log_softmax(dim=-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)                                           # [N]
        right = scores.argmax(dim=-1) == labels
        if right.any():
            loss = loss + certainty * entropy[right].mean()
    return loss
