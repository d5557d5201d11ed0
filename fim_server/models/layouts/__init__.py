"""One module per published lineage; each registers its layouts with models.published on import."""

from . import coda, dream, llada  # noqa: F401  full attention (canvas engine)
from . import fast_dllm, sdar, stable_diffcoder  # noqa: F401  block diffusion (block engine)
