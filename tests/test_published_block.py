"""The published block-diffusion coders (Fast-dLLM v2, SDAR, Stable-DiffCoder) load natively from a
checkpoint in their exact layout (tests/published_block_fixtures.py), offline and without ever
running their modeling code, and decode through the block engine as they were trained: logits
equal a forward written here from the published modeling code with plain torch ops."""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
import tempfile
import threading

import pytest
import torch
from safetensors.torch import load_file

from fim_server.engine.block import BlockCache, BlockEngine
from fim_server.engine.types import InfillRequest
from fim_server.models import load_model
from fim_server.models.layouts import find_layout
from fim_server.models.published import read_raw_config
from fim_server.wire.options import DecodeConfig

from published_block_fixtures import BUILDERS, FACTS

FAMILIES = list(BUILDERS)
NATIVE = {"fast-dllm-v2": "Qwen2ForCausalLM", "sdar": "Qwen3ForCausalLM", "stable-diffcoder": "LlamaForCausalLM"}
REQUESTS = [InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "r0"),
            InfillRequest("class Stack:\n    def push(self, item):\n        ", "\n    def pop(self):\n", "r1"),
            InfillRequest("x = ", "", "r2")]


def no_remote_code(*args, **kwargs):
    raise AssertionError("transformers was asked to load remote code")


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1, and transformers' dynamic-module loader replaced by a failure wherever it
    was imported (the checkpoints' own modeling files raise if run, too)."""
    import huggingface_hub.constants
    import transformers.models.auto.auto_factory  # noqa: F401  (imported now, so that they get patched)
    import transformers.models.auto.configuration_auto  # noqa: F401
    import transformers.models.auto.tokenization_auto  # noqa: F401

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        for name, module in list(sys.modules.items()):
            if name.startswith("transformers") and hasattr(module, "get_class_from_dynamic_module"):
                mp.setattr(module, "get_class_from_dynamic_module", no_remote_code)
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("published-block")
    for name, build in BUILDERS.items():
        build(root / name)
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request, checkpoints, offline):
    """The family's checkpoint through the path of `--model DIR`, in float64 on the CPU."""
    lm = load_model(str(checkpoints / request.param), kind="block", device="cpu", dtype="float64")
    return BlockEngine(lm)


def facts(engine) -> dict:
    return FACTS[engine.lm.family.name]


# ---------------------------------------------------------------- the published forward, by hand


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """As the published RMSNorms compute it: normalised in float32 whatever the model's dtype, then
    back to it and scaled."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [N, H, D] rotated by position (rotate_half: the two halves of D pair up). The published
    rotary embeddings compute the angles, cos and sin in float32 whatever the model's dtype."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)                           # [D/2] float32
    angles = positions[:, None].float() * inv[None]                                    # [N, D/2]
    cos = torch.cat([angles.cos()] * 2, -1)[:, None].double()                          # [N, 1, D]
    sin = torch.cat([angles.sin()] * 2, -1)[:, None].double()
    half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], dim=-1)
    return x * cos + half * sin


@functools.cache
def checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the float64 tensors of model.safetensors."""
    cfg = json.loads((path / "config.json").read_text())
    return cfg, {k: v.double() for k, v in load_file(str(path / "model.safetensors")).items()}


def reference_logits(path, ids: list[int], block: int) -> torch.Tensor:
    """[N, V] float64 logits of `ids` (positions 0..N-1) under the block-causal mask of the published
    generate(): a token sees every token whose block (position // block) is not later than its own.
    Straight from model.safetensors: RMSNorm, q/k/v (+ biases: Qwen2), per-head q/k RMSNorm (Qwen3),
    RoPE, grouped-query attention, SwiGLU, final norm, the head (the embeddings when tied)."""
    cfg, w = checkpoint(path)
    heads, kv, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // heads
    n = len(ids)
    pos = torch.arange(n)
    sees = (pos[None, :] // block) <= (pos[:, None] // block)                          # [N, N] query x key
    x = w["model.embed_tokens.weight"][ids]                                            # [N, hidden]

    def proj(h, name, count):
        out = h @ w[name + ".weight"].T + w.get(name + ".bias", 0)
        return out.view(n, count, d)                                                   # [N, heads, D]

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        a = p + "self_attn."
        q, k, v = proj(h, a + "q_proj", heads), proj(h, a + "k_proj", kv), proj(h, a + "v_proj", kv)
        if a + "q_norm.weight" in w:                                                    # Qwen3: per head, before RoPE
            q, k = rms_norm(q, w[a + "q_norm.weight"], eps), rms_norm(k, w[a + "k_norm.weight"], eps)
        q, k = rope(q, pos, cfg["rope_theta"]), rope(k, pos, cfg["rope_theta"])
        k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
        attn = scores.masked_fill(~sees, float("-inf")).softmax(dim=-1)
        x = x + torch.einsum("hqk,khd->qhd", attn, v).reshape(n, heads * d) @ w[a + "o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def slots_of(ref: torch.Tensor, start: int, width: int, shift: int) -> torch.Tensor:
    """The reference rows that predict slots start .. start+width-1 under a logit convention."""
    return ref[start - shift:start - shift + width]


# ---------------------------------------------------------------- tests


def test_loads_natively_as_its_base_architecture(engine, checkpoints):
    name = engine.lm.family.name
    raw = read_raw_config(str(checkpoints / name))
    assert find_layout(raw).family == name and "auto_map" in raw
    assert type(engine.model).__name__ == NATIVE[name]
    assert engine.model.config.vocab_size == facts(engine)["vocab"] == engine.model.lm_head.weight.shape[0]


def test_special_ids_and_published_defaults(engine, checkpoints):
    """The family's tokens resolve to the real ids; the block size (and sub-block) are the published
    ones; the prompt is PSM or SPM as the family was trained."""
    f, ids = facts(engine), engine.ids
    assert ids.mask == f["mask"] and ids.end_of_middle[0] == f["end"] and ids.bos == f["bos"]
    assert (ids.fim_prefix, ids.fim_suffix, ids.fim_middle) == f["fim"]
    raw = read_raw_config(str(checkpoints / engine.lm.family.name))
    assert raw.get("mask_token_id", ids.mask) == ids.mask and raw["eos_token_id"] in ids.end_of_middle
    config = engine.default_config()
    assert (config.block_size, config.sub_block_size) == (f["block"], f["sub_block"])
    prompt = engine.start(REQUESTS[0], config).prompt
    start = ([ids.bos] if ids.bos is not None else []) + [ids.fim_suffix if f["order"] == "spm" else ids.fim_prefix]
    assert prompt[:len(start)] == start and prompt[-1] == ids.fim_middle


def request_with_tail(engine, block: int) -> InfillRequest:
    """A request whose prompt ends inside a block, with at least one whole block before it."""
    prefix, suffix = "def add(a, b):\n    '''Return the sum of a and b.'''\n    return ", "\n\nprint(add(1, 2))\n"
    while True:
        n = len(engine.start(InfillRequest(prefix, suffix), engine.default_config()).prompt)
        if n % block and n > block:
            return InfillRequest(prefix, suffix)
        prefix += " "


def test_logits_equal_the_published_forward(engine, checkpoints):
    """The engine's cached steps (prefill of the prompt's whole blocks, then the first block with
    the prompt's tail, then a block after a settled one) give the logits of the hand-written
    forward over the whole sequence, under the family's logit convention and not the other."""
    f, mask = facts(engine), engine.ids.mask
    assert engine.shifted == f["shifted"]
    block, path = f["block"], checkpoints / engine.lm.family.name
    row = engine.start(request_with_tail(engine, block), engine.default_config())
    tail = engine.tails([row], block)[0]
    head = row.prompt[:len(row.prompt) - len(tail)]
    assert 0 < len(tail) < block and len(head) % block == 0
    gen = torch.Generator().manual_seed(0)
    words = torch.randint(300, 150000, (block,), generator=gen).tolist()
    first = tail + [mask if j % 3 else words[j] for j in range(block - len(tail))]
    second = [mask if j % 2 else 1000 + j for j in range(block)]
    cache = BlockCache(engine, [row], block)
    shift = 1 if engine.shifted else 0
    got = cache.step(torch.tensor([first]))[0]
    ref = reference_logits(path, head + first, block)
    torch.testing.assert_close(got, slots_of(ref, len(head), block, shift), rtol=0, atol=1e-9)
    assert not torch.allclose(got[1:], slots_of(ref, len(head), block, 1 - shift)[1:])
    settled = [t if t != mask else 2000 + j for j, t in enumerate(first)]
    cache.settle(torch.tensor([settled]))
    for _ in range(2):                                   # the block's first step, then a cached one
        got = cache.step(torch.tensor([second]))[0]
        ref = reference_logits(path, head + settled + second, block)
        torch.testing.assert_close(got, slots_of(ref, len(head) + block, block, shift), rtol=0, atol=1e-9)
    assert cache.cache.get_seq_length() == len(head) + block        # the settled block, cached once


def test_a_batch_decodes_as_its_rows_alone(engine):
    """Rows whose prompts end at different places in their blocks (different tails) batch exactly.
    (threshold 0: a block or sub-block a forward, to keep the 150k-vocabulary steps few)"""
    config = engine.default_config().replace(max_tokens=8, threshold=0.0)
    tails = {len(t) for t in engine.tails([engine.start(r, config) for r in REQUESTS], config.block_size)}
    together = engine.infill(REQUESTS, config)
    alone = [engine.infill([r], config)[0] for r in REQUESTS]
    assert len(tails) > 1
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert all(len(r.token_ids) <= 8 and r.stats.stop_reason in ("end", "repeat", "length", "empty") for r in together)


def test_sub_blocks_fill_left_to_right(engine):
    """With threshold 0 a step commits every open slot of the sub-block it works on, so the middle
    costs one forward per sub-block its slots touch (counted from the first block's start)."""
    size, n = 2, 6
    config = engine.default_config().replace(sub_block_size=size, threshold=0.0, max_tokens=n)
    req = request_with_tail(engine, config.block_size)
    tail = len(engine.tails([engine.start(req, config)], config.block_size)[0])
    result = engine.infill([req], config)[0]
    touched = {((tail + j) // config.block_size, (tail + j) % config.block_size // size) for j in range(n)}
    if result.stats.stop_reason == "length":            # an end token may close it sooner
        assert result.stats.nfe == 1 + len(touched)      # the prefill, then a forward per sub-block
    assert result.stats.nfe <= 1 + len(touched)


# ---------------------------------------------------------------- the command line and the worker


def test_fim_server_complete(engine, checkpoints, tmp_path, capsys, monkeypatch):
    """`fim-server complete --model DIR --engine block`: the family's defaults, the flags over them."""
    from fim_server import cli

    seen, original = [], BlockEngine.infill
    monkeypatch.setattr(BlockEngine, "infill",
                        lambda self, reqs, config, *a: seen.append(config) or original(self, reqs, config, *a))
    (tmp_path / "p.py").write_text(REQUESTS[0].prefix)
    (tmp_path / "s.py").write_text(REQUESTS[0].suffix)
    name = engine.lm.family.name
    args = ["complete", "--prefix-file", str(tmp_path / "p.py"), "--suffix-file", str(tmp_path / "s.py"),
            "--model", str(checkpoints / name), "--engine", "block", "--device", "cpu", "--max-tokens", "5", "--json"]
    assert cli.main(args + ["--threshold", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == name and out["engine"] == "block" and isinstance(out["completion"], str)
    assert out["tokens"] <= 5 and out["nfe"] >= 1 and not out["random_weights"]
    f = facts(engine)
    assert (seen[-1].block_size, seen[-1].sub_block_size, seen[-1].threshold) == (f["block"], f["sub_block"], 0.5)


def test_the_worker_serves_it_with_the_family_defaults(engine, monkeypatch):
    """A worker on the engine starts every request from the family's defaults; a request's own
    options win."""
    from fim_server.wire.client import SyncWorkerClient
    from fim_server.worker.server import Worker, WorkerOptions

    seen = []
    original = engine.infill
    monkeypatch.setattr(engine, "infill", lambda reqs, config, *a: seen.append(config) or original(reqs, config, *a))
    sock = tempfile.mkdtemp(prefix="fimpb-")
    stop = threading.Event()
    worker = Worker(WorkerOptions(bind=f"ipc://{sock}/w.sock"), stop)
    info = {"model": "dir", "family": engine.lm.family.name, "device": "cpu", "random_weights": False}
    thread = threading.Thread(target=worker.run, args=(engine, info, engine.default_config()), daemon=True)
    thread.start()
    try:
        with SyncWorkerClient(worker.endpoint) as client:
            plain = client.infill(REQUESTS[0].prefix, REQUESTS[0].suffix, max_tokens=5, deadline_s=60)
            own = client.infill(REQUESTS[1].prefix, REQUESTS[1].suffix, max_tokens=5, deadline_s=60,
                                options={"block_size": 8, "sub_block_size": 0})
    finally:
        stop.set()
        thread.join(30)
        shutil.rmtree(sock, ignore_errors=True)
    assert isinstance(plain.text, str) and plain.stats["engine"] == "block" and not plain.cancelled
    assert isinstance(own.text, str) and own.stats["tokens"] <= 5
    f = facts(engine)
    assert (seen[0].block_size, seen[0].sub_block_size) == (f["block"], f["sub_block"])
    assert (seen[1].block_size, seen[1].sub_block_size, seen[1].threshold) == (8, 0, seen[0].threshold)
    assert seen[0] == engine.default_config().replace(max_tokens=5)
