"""Package data: the bundled tiny models (one directory per model)."""
