"""On CUDA: both engines run in bf16 and batch 1 equals batch N. Skipped without a GPU."""

import pytest
import torch

from fim_server.wire.options import DecodeConfig
from fim_server.engine.ar import AREngine
from fim_server.engine.diffusion import DiffusionEngine
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model
from fim_server.models.random_init import build_random_checkpoint

pytestmark = pytest.mark.gpu

REQUESTS = [InfillRequest("def add(a, b):\n    return ", "\n"), InfillRequest("for i in range(3):\n", "")]


@pytest.mark.parametrize("family,engine_cls,cfg", [
    ("fim-tiny-dlm", DiffusionEngine, DecodeConfig(max_tokens=16, threshold=0.5)),
    ("fim-tiny-ar", AREngine, DecodeConfig(engine="ar", max_tokens=16)),
])
def test_engine_on_cuda_bf16(tmp_path, family, engine_cls, cfg):
    path = build_random_checkpoint(tmp_path, family)
    lm = load_model(str(path), kind=cfg.engine)
    assert lm.device.type == "cuda" and lm.dtype in (torch.bfloat16, torch.float16)
    engine = engine_cls(lm)
    together = engine.infill(REQUESTS, cfg)
    alone = [engine.infill([r], cfg)[0] for r in REQUESTS]
    assert all(r.stats.nfe >= 1 for r in together)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
