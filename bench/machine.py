"""The machine description lives in the package (training logs name it too)."""

from fim_server.machine import cpu_model, describe, one_line  # noqa: F401
