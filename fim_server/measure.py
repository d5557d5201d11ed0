"""Measurements: name the machine a figure was measured on (so it is never quoted without it),
and rank latencies. No torch at import time."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Optional


def _cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """The kernel's CPU description (Linux); "" where it cannot be read."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 natively (avx512_bf16 or AMX); elsewhere torch
    emulates it, slower than float32. Linux flags; False where they cannot be read."""
    flags = _cpuinfo(cpuinfo).split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe(device: str = "cpu") -> dict:
    import torch
    import transformers

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def one_line(info: dict) -> str:
    where = info.get("gpu") or f"{info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads)"
    return f"{where}; torch {info['torch']}, transformers {info['transformers']}"


def percentile(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in [0, 100]); None when there is nothing to rank."""
    if not values:
        return None
    ranked = sorted(values)
    k = max(0, min(len(ranked), math.ceil(q / 100 * len(ranked))) - 1)
    return round(ranked[k], 3)
