"""One module per published lineage; each registers its layouts with models.published on
import. Import layouts from here: this package loads every lineage before it looks one up."""

from typing import Optional

from ..published import LAYOUTS, Layout
from . import coda, dream, llada  # noqa: F401  full attention (canvas engine)
from . import fast_dllm, sdar, stable_diffcoder  # noqa: F401  block diffusion (block engine)

__all__ = ["LAYOUTS", "Layout", "find_layout", "unsupported_message"]


def find_layout(raw: dict) -> Optional[Layout]:
    """The layout for a raw config: by `architectures` first (LLaDA-MoE shares LLaDA's model_type),
    then by `model_type`; None for checkpoints transformers loads as they are."""
    archs = set(raw.get("architectures") or ())
    for layout in LAYOUTS.values():
        if archs & set(layout.architectures):
            return layout
    for layout in LAYOUTS.values():
        if raw.get("model_type") in layout.model_types and not layout.architectures:
            return layout
    return None


def unsupported_message(source: str, raw: dict) -> str:
    names = ", ".join(sorted(LAYOUTS)) or "none"
    return (f"{source} is a {raw.get('model_type')!r} checkpoint ({', '.join(raw.get('architectures') or ['?'])}) "
            f"that needs its own modeling code, which this server never runs; "
            f"supported published layouts: {names}")
