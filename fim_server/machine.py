"""Name the machine a benchmark ran on, so figures are never quoted without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
