"""Small helpers several test modules share (fixtures live in conftest.py)."""

import torch


def liven(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Redraw the matrices with a larger spread: a freshly initialised model repeats one token
    forever, which would hide cache and position bugs; this one changes its mind every step."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
