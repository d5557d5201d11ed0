"""Model families: loading real from_pretrained checkpoints of each exact architecture."""

import json

import pytest
import torch

from fim_server.models import FAMILIES, load_model
from fim_server.models.random_init import build_random_checkpoint

ARCH = {"fim-tiny-dlm": "Qwen2ForCausalLM", "fim-tiny-ar": "Qwen2ForCausalLM",
        "qwen2.5-coder": "Qwen2ForCausalLM", "starcoder2": "Starcoder2ForCausalLM",
        "deepseek-coder": "LlamaForCausalLM", "codellama": "LlamaForCausalLM"}


@pytest.mark.parametrize("name", sorted(ARCH))
def test_each_family_loads_and_resolves_its_tokens(tmp_path, name):
    path = build_random_checkpoint(tmp_path, name)
    fam = FAMILIES[name]
    lm = load_model(str(path), kind=fam.kind)
    assert type(lm.model).__name__ == ARCH[name]
    assert lm.family.name == name
    vocab = lm.tokenizer.get_vocab()
    if fam.is_diffusion:
        assert lm.ids.mask == vocab[fam.mask]
    else:
        assert (lm.ids.fim_prefix, lm.ids.fim_suffix, lm.ids.fim_middle) == (
            vocab[fam.fim_prefix], vocab[fam.fim_suffix], vocab[fam.fim_middle])
        assert lm.ids.fim_prefix in lm.ids.banned
    assert lm.ids.end_of_middle and all(i in vocab.values() for i in lm.ids.end_of_middle)


def test_family_detected_from_tokens_when_not_declared(tmp_path):
    path = build_random_checkpoint(tmp_path, "starcoder2")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["fim_family"]
    (path / "config.json").write_text(json.dumps(cfg))
    assert load_model(str(path), kind="ar").family.name == "starcoder2"


def test_checkpoint_declares_its_logit_convention(tmp_path):
    path = build_random_checkpoint(tmp_path, "fim-tiny-dlm")
    assert load_model(str(path), kind="diffusion").family.shifted is False
    cfg = json.loads((path / "config.json").read_text())
    cfg["fim_logits_shifted"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    assert load_model(str(path), kind="diffusion").family.shifted is True


def test_checkpoint_declares_its_prompt_order(tmp_path):
    """config.json fim_order (fim-server train --fim-order) sets the order of the engines' prompt;
    a value that is neither psm nor spm is a clear error."""
    from fim_server.engine import load_engine

    path = build_random_checkpoint(tmp_path, "fim-tiny-ar")
    engine = load_engine("ar", str(path))
    ids = engine.ids
    assert engine.prompt([10], [20]) == [ids.fim_prefix, 10, ids.fim_suffix, 20, ids.fim_middle]
    cfg = json.loads((path / "config.json").read_text())
    cfg["fim_order"] = "spm"
    (path / "config.json").write_text(json.dumps(cfg))
    engine = load_engine("ar", str(path))
    assert engine.prompt([10], [20]) == [ids.fim_suffix, 20, ids.fim_prefix, 10, ids.fim_middle]
    cfg["fim_order"] = "pms"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="fim_order is 'pms'"):
        load_model(str(path), kind="ar")


def test_wrong_engine_for_a_model_is_a_clear_error(tmp_path):
    path = build_random_checkpoint(tmp_path, "fim-tiny-ar")
    with pytest.raises(ValueError, match="autoregressive|ar model"):
        load_model(str(path), kind="diffusion")


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(OSError):
        load_model(str(tmp_path / "nope"), kind="diffusion")


@pytest.mark.parametrize("name", ["fim-tiny-dlm", "fim-tiny-ar", "starcoder2", "codellama"])
def test_forwards_use_the_cache_argument_this_transformers_takes(tmp_path, name):
    """No deprecation warning from the engines' forwards (transformers 5.24 renamed
    past_key_values to cache), and the cache still comes back filled."""
    import warnings

    from fim_server.engine import load_engine
    from fim_server.engine.types import InfillRequest
    from fim_server.models.loader import cache_keyword
    from fim_server.wire.options import DecodeConfig

    fam = FAMILIES[name]
    path = build_random_checkpoint(tmp_path, name)
    engine = load_engine(fam.kind, str(path), device="cpu")
    assert cache_keyword(engine.model) in ("cache", "past_key_values")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        result = engine.infill([InfillRequest("def f(x):\n    return ", "\n", key="doc")],
                               DecodeConfig(engine=fam.kind, max_tokens=4, length="fixed"))[0]
    assert result.stats.nfe > 0
    assert engine.cached_documents() == 1          # the prompt KV came back out of the forward


def test_default_dtype_takes_bfloat16_only_on_a_cpu_with_bf16_units(tmp_path, monkeypatch):
    from fim_server.models import loader

    with_units = tmp_path / "with"
    with_units.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert loader.cpu_has_bf16_units(str(with_units))
    assert not loader.cpu_has_bf16_units(str(without))
    assert not loader.cpu_has_bf16_units(str(tmp_path / "missing"))

    cpu, read = torch.device("cpu"), loader.cpu_has_bf16_units
    for path, want in ((with_units, torch.bfloat16), (without, torch.float32)):
        monkeypatch.setattr(loader, "cpu_has_bf16_units", lambda path=path: read(str(path)))
        assert loader.pick_dtype(cpu, "auto") == want
        assert loader.pick_dtype(cpu) == want                           # auto is the default
    assert loader.pick_dtype(cpu, "float32") == torch.float32
    with pytest.raises(ValueError, match="auto"):
        loader.pick_dtype(cpu, "float8")
