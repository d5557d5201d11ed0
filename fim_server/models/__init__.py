from .family import FAMILIES, Family, TokenIds, detect_family, resolve_tokens
from .loader import LoadedModel, bundled_path, load_model

__all__ = ["FAMILIES", "Family", "TokenIds", "detect_family", "resolve_tokens", "LoadedModel",
           "bundled_path", "load_model"]
