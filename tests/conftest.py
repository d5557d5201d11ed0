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
