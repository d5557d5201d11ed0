import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def random_dlm_dir(tmp_path_factory):
    """A randomly initialised fim-tiny-dlm checkpoint (bidirectional Qwen2 + bundled tokenizer layout)."""
    from fim_server.models.random_init import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("dlm"), "fim-tiny-dlm", seed=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small random fim-tiny-dlm checkpoint for real worker processes (the worker and HTTP
    tests), with a 1024-token window: room for their slow 700-800-token middles."""
    import json

    from fim_server.models.random_init import build_random_checkpoint

    path = build_random_checkpoint(tmp_path_factory.mktemp("worker-dlm"), "fim-tiny-dlm",
                                   hidden=64, layers=2, vocab_size=512)
    config = json.loads((path / "config.json").read_text())
    config["fim_context_tokens"] = 1024
    (path / "config.json").write_text(json.dumps(config))
    return path
