"""Fill-in-the-middle code completion served by a diffusion language model."""

__version__ = "0.1.0"
