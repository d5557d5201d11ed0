"""Engines: text in, middle text plus stats out. `load_engine` picks one by kind.

    base (start -> decode -> result) <- ar, diffusion (in-place canvas), block (block diffusion, PSM),
                                        speculative (diffusion drafts, AR verifies)
    layout (fit prefix/suffix to the budget), canvas (a diffusion row), unmask (what a step commits),
    kv + prefix_store (block and cross-request KV), batching (padding), repetition (the loop guard),
    postprocess (the middle's text)
"""

from __future__ import annotations

from typing import Optional

from .types import InfillRequest, InfillResult, Stats


def load_engine(kind: str = "diffusion", model: Optional[str] = None, device: Optional[str] = None,
                dtype: Optional[str] = None, family: Optional[str] = None, ar_model: Optional[str] = None):
    """A ready engine of `kind` ("diffusion" | "ar" | "speculative" | "block") on a bundled, local or hub
    checkpoint. Speculative: `model` (and `family`) is the diffusion drafter, `ar_model` the AR
    verifier; either left out is the bundled twin."""
    from fim_server.models.loader import load_model

    if kind == "speculative":
        from .ar import AREngine
        from .diffusion import DiffusionEngine
        from .speculative import SpeculativeEngine

        draft = load_model(model, kind="diffusion", family=family, device=device, dtype=dtype)
        verifier = load_model(ar_model, kind="ar", device=device, dtype=dtype)
        return SpeculativeEngine(DiffusionEngine(draft), AREngine(verifier))
    lm = load_model(model, kind=kind, family=family, device=device, dtype=dtype)
    if kind == "block":
        from .block import BlockEngine

        return BlockEngine(lm)
    if kind == "diffusion":
        from .diffusion import DiffusionEngine

        return DiffusionEngine(lm)
    from .ar import AREngine

    return AREngine(lm)


__all__ = ["InfillRequest", "InfillResult", "Stats", "load_engine"]
