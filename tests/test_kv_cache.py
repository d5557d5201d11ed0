"""The engines' cache (engine.kv.new_cache): writing into reserved room must behave exactly as
transformers' concatenating DynamicCache, through growth, crops, row selection and a model's
own forwards, and must never write into tensors it was given or handed out before a crop."""

import torch
from transformers import DynamicCache

from fim_server.engine.kv import ReservedLayer, new_cache
from fim_server.models import load_model
from fim_server.models.loader import bundled_path


def kv(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 8, generator=g), torch.randn(batch, 2, length, 8, generator=g)


def same(a: DynamicCache, b: DynamicCache) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    for x, y in zip(a.layers, b.layers):
        assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)


def test_updates_crops_growth_and_row_selection_match_dynamic_cache():
    config = load_model(str(bundled_path("ar")), kind="ar").model.config
    ours, theirs = new_cache(config), DynamicCache(config=config)
    assert all(isinstance(layer, ReservedLayer) for layer in ours.layers)
    ops = [("update", 3, 40), ("update", 3, 1), ("crop", 0, -1), ("update", 3, 5), ("crop", 0, -4),
           ("update", 3, 300), ("select", 0, 0), ("update", 2, 7), ("crop", 0, -3), ("update", 2, 1)]
    for seed, (op, batch, n) in enumerate(ops):
        if op == "update":
            for layer in range(len(ours.layers)):
                k, v = kv(batch, n, seed * 100 + layer)
                got, want = ours.update(k, v, layer), theirs.update(k, v, layer)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        elif op == "crop":
            ours.crop(n), theirs.crop(n)
        else:
            keep = torch.tensor([2, 0])
            ours.batch_select_indices(keep), theirs.batch_select_indices(keep)
        same(ours, theirs)
    assert ours.layers[0].buffers[0].shape[-2] > ours.get_seq_length()       # room reserved ahead


def test_given_tensors_and_earlier_copies_are_never_written():
    config = load_model(str(bundled_path("ar")), kind="ar").model.config
    data = [kv(1, 20, layer) for layer in range(config.num_hidden_layers)]
    kept = [(k.clone(), v.clone()) for k, v in data]
    cache = new_cache(config, data)
    assert cache.get_seq_length() == 20
    cache.crop(-5)
    for layer in range(config.num_hidden_layers):
        cache.update(*kv(1, 9, 50 + layer), layer)
    for (k, v), (k0, v0) in zip(data, kept):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    assert torch.equal(cache.layers[0].keys[:, :, :15], kept[0][0][:, :, :15])


def test_model_forwards_give_the_same_logits_as_with_a_dynamic_cache():
    """Prefill, a decode step, a crop and a multi-token step: bit for bit what DynamicCache gives."""
    lm = load_model(str(bundled_path("block")), kind="block", dtype="float64")
    prompt = torch.randint(10, 4000, (2, 50), generator=torch.Generator().manual_seed(0))
    caches = [new_cache(lm.model.config), DynamicCache(config=lm.model.config)]
    outputs = []
    with torch.inference_mode():
        for cache in caches:
            steps = [lm.model(input_ids=prompt, cache=cache, use_cache=True).logits]
            steps.append(lm.model(input_ids=prompt[:, :1], cache=cache, use_cache=True).logits)
            cache.crop(-1)
            block = prompt[:, 10:14]
            mask = torch.ones((2, 1, 4, 54), dtype=torch.bool)
            positions = 50 + torch.arange(4)[None].expand(2, 4)
            steps.append(lm.model(input_ids=block, cache=cache, attention_mask=mask,
                                  position_ids=positions, use_cache=True).logits)
            outputs.append(steps)
    for ours, theirs in zip(*outputs):
        assert torch.equal(ours, theirs)
