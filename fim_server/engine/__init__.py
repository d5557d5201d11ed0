"""Engines: text in, middle text plus stats out. `load_engine` picks one by kind."""

from __future__ import annotations

from typing import Optional

from .types import InfillRequest, InfillResult, Stats


def load_engine(kind: str = "diffusion", model: Optional[str] = None, device: Optional[str] = None,
                dtype: Optional[str] = None, family: Optional[str] = None):
    """A ready engine of `kind` ("diffusion" | "ar") on a bundled, local or hub checkpoint."""
    from ..models.loader import load_model

    lm = load_model(model, kind=kind, family=family, device=device, dtype=dtype)
    if kind == "diffusion":
        from .diffusion import DiffusionEngine

        return DiffusionEngine(lm)
    from .ar import AREngine

    return AREngine(lm)


__all__ = ["InfillRequest", "InfillResult", "Stats", "load_engine"]
