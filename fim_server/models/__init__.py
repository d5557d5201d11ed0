"""Checkpoints: the families the engines know (family) and loading one by path or hub id (loader)."""

from .family import FAMILIES, Family, TokenIds, detect_family, resolve_tokens
from .loader import LoadedModel, bundled_path, load_model

__all__ = ["FAMILIES", "Family", "TokenIds", "detect_family", "resolve_tokens", "LoadedModel",
           "bundled_path", "load_model"]
