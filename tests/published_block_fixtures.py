"""Tiny checkpoints in the exact published layouts of the block-diffusion coders: the real
config.json keys (only the widths and depths shrunk), the real tensor names, and a tokenizer whose
special tokens sit at their real ids in a vocabulary of the real size (filler tokens between).

Sources (see /work/shared/notes/dllm-checkpoints.md sections 9, 10, 11):
  Fast-dLLM v2  config: Efficient-Large-Model/Fast_dLLM_v2_7B config.json (vendored in
                Satgoy152/DualDiffusion); mask |<MASK>| 151665 (added_tokens.json, modeling.py's
                generate default); tensors: Qwen2's (modeling.py)
  SDAR          config: the SDAR-4B config format; mask <|MASK|> (JetAstra/SDAR generate.py strips
                it; tokenizer.mask_token) at 151669 (sglang); tensors: Qwen3's (modeling_sdar.py)
  Stable-DiffCoder  config: Stable-DiffCoder-8B-Base config.json; mask <[MASK_TOKEN]> 5 (the default
                mask_id of its generate_block); bos 0, pad 1, eos 2 (config); tensors: Llama's
                (StableDiffcoderForCausalLM subclasses LlamaForCausalLM)
The ids of Seed-Coder's <[fim-*]> tokens were not found in any source read: FIM_IDS_UNVERIFIED.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 64, 4, 2, 8, 2

QWEN_BASE = 151643                      # Qwen2/Qwen3 byte-level BPE entries; the added tokens follow
QWEN25_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]                              # 151643 .. 151664
QWEN3_ADDED = QWEN25_ADDED + ["<tool_response>", "</tool_response>", "<think>", "</think>"]   # .. 151668

SEED_SPECIAL = {0: "<[begin▁of▁sentence]>", 1: "<[PAD▁TOKEN]>", 2: "<[end▁of▁sentence]>", 5: "<[MASK_TOKEN]>"}
FIM_IDS_UNVERIFIED = {124: "<[fim-suffix]>", 125: "<[fim-prefix]>", 126: "<[fim-middle]>"}


def qwen_ids(added: list[str], extra: str) -> dict[int, str]:
    return {QWEN_BASE + i: t for i, t in enumerate(added + [extra])}


# family -> what the test checks against: the real ids, the published block and convention
FACTS = {
    "fast-dllm-v2": {"mask": 151665, "end": 151645, "fim": (151659, 151661, 151660), "bos": None,
                     "block": 32, "sub_block": 8, "shifted": True, "order": "psm", "vocab": 152064},
    "sdar": {"mask": 151669, "end": 151643, "fim": (151659, 151661, 151660), "bos": None,
             "block": 4, "sub_block": 0, "shifted": False, "order": "psm", "vocab": 151936},
    "stable-diffcoder": {"mask": 5, "end": 2, "fim": (125, 124, 126), "bos": 0,
                         "block": 4, "sub_block": 0, "shifted": False, "order": "spm", "vocab": 155136},
}


def special(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def write_tokenizer(path: Path, size: int, specials: dict[int, str], config: dict) -> None:
    """tokenizer.json: a byte-level BPE over `size` ids: the 256 byte symbols, `specials` at their
    ids, filler tokens (f<id>, which decode as text) elsewhere. No merges: text encodes byte by
    byte. tokenizer_config.json: `config` plus the special tokens' added_tokens_decoder."""
    symbols = iter(sorted(pre_tokenizers.ByteLevel.alphabet()))
    vocab, base = {}, min([size, *(i for i in specials if i >= 256)])
    for i in range(base):
        token = specials.get(i) or next(symbols, None) or f"f{i}"
        vocab[token] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    data = json.loads(tok.to_str())
    data["added_tokens"] = [{"id": i, **special(t)} for i, t in sorted(specials.items())]
    (path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = {**config, "added_tokens_decoder": {str(i): special(t) for i, t in sorted(specials.items())}}
    (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))


def random_tensors(names_shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """bf16 like the published files; a spread wide enough that the logits differ from position
    to position (norm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in names_shapes.items():
        if name.endswith("norm.weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            t = (0.05 if name.endswith(".bias") else 0.3) * torch.randn(shape, generator=gen)
        out[name] = t.to(torch.bfloat16)
    return out


def tensor_shapes(vocab: int, bias: bool, qk_norm: bool, tied: bool) -> dict[str, tuple[int, ...]]:
    """The published tensor names: Qwen2 (q/k/v biases), Qwen3 (q_norm/k_norm), Llama (neither)."""
    shapes = {"model.embed_tokens.weight": (vocab, HIDDEN), "model.norm.weight": (HIDDEN,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
                   p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
                   p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                   p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
                   p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
                   p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN), p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
                   p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE)}
        if bias:
            shapes |= {p + f"self_attn.{x}_proj.bias": (n * HEAD_DIM,) for x, n in (("q", HEADS), ("k", KV_HEADS),
                                                                                 ("v", KV_HEADS))}
        if qk_norm:
            shapes |= {p + "self_attn.q_norm.weight": (HEAD_DIM,), p + "self_attn.k_norm.weight": (HEAD_DIM,)}
    return shapes


def dims(**more) -> dict:
    return {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "num_hidden_layers": LAYERS, **more}


def fast_dllm_v2(path: Path) -> None:
    """Efficient-Large-Model/Fast_dLLM_v2_7B, shrunk."""
    config = {
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {"AutoConfig": "configuration.Fast_dLLM_QwenConfig", "AutoModel": "modeling.Fast_dLLM_QwenModel",
                     "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"},
        "attention_dropout": 0.0, "bd_size": 32, "bos_token_id": 151643, "conplemenrary_mask": True,
        "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02,
        "layer_types": ["full_attention"] * LAYERS, "max_position_embeddings": 32768, "max_window_layers": 28,
        "model_type": "Fast_dLLM_Qwen", "pad_token_id": 151645, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.53.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
        **dims(),
    }
    tensors = random_tensors(tensor_shapes(152064, bias=True, qk_norm=False, tied=False), seed=11)
    write_checkpoint(path, config, tensors, ("modeling.py", "configuration.py"))
    (path / "added_tokens.json").write_text(json.dumps({t: i for i, t in qwen_ids(QWEN25_ADDED, "|<MASK>|").items()}))
    write_tokenizer(path, QWEN_BASE, qwen_ids(QWEN25_ADDED, "|<MASK>|"), {
        "add_prefix_space": False, "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 32768, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "|<MASK>|"]})


def sdar(path: Path) -> None:
    """The SDAR-4B config.json format (JetLM/SDAR-*-Chat), shrunk."""
    config = {
        "architectures": ["SDARForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARForCausalLM",
                     "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
        "attention_bias": False, "attention_dropout": 0.0, "block_size": 4, "bos_token_id": 151643, "debug": False,
        "eos_token_id": 151643, "ep_size": 1, "fuse_cross_entropy": True, "head_dim": HEAD_DIM, "hidden_act": "silu",
        "initializer_range": 0.02, "mask_token_id": 151669, "max_position_embeddings": 40960,
        "max_window_layers": 36, "micro_forward": False, "model_type": "sdar", "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000, "skip_checkpoint": False, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.52.4",
        "use_cache": True, "use_deepep": False, "use_sliding_window": False, "vocab_size": 151936, **dims(),
    }
    tensors = random_tensors(tensor_shapes(151936, bias=False, qk_norm=True, tied=False), seed=12)
    write_checkpoint(path, config, tensors, ("modeling_sdar.py", "configuration_sdar.py", "tokenization_qwen2.py"))
    write_tokenizer(path, QWEN_BASE, qwen_ids(QWEN3_ADDED, "<|MASK|>"), {
        "add_prefix_space": False, "auto_map": {"AutoTokenizer": ["tokenization_qwen2.Qwen2Tokenizer", None]},
        "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "mask_token": "<|MASK|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})


def stable_diffcoder(path: Path) -> None:
    """ByteDance-Seed/Stable-DiffCoder-8B-Base, shrunk."""
    config = {
        "architectures": ["StableDiffcoderForCausalLM"],
        "auto_map": {"AutoModel": "modeling_stable_diffcoder.StableDiffcoderForCausalLM",
                     "AutoModelForCausalLM": "modeling_stable_diffcoder.StableDiffcoderForCausalLM"},
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 2,
        "head_dim": HEAD_DIM, "hidden_act": "silu", "initializer_range": 0.009882118, "max_position_embeddings": 8192,
        "mlp_bias": False, "model_type": "llama", "pad_token_id": 1, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "5.3.0", "use_cache": True, "vocab_size": 155136, **dims(),
    }
    tensors = random_tensors(tensor_shapes(155136, bias=False, qk_norm=False, tied=False), seed=13)
    write_checkpoint(path, config, tensors, ("modeling_stable_diffcoder.py",))
    write_tokenizer(path, 155136, {**SEED_SPECIAL, **FIM_IDS_UNVERIFIED}, {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<[begin▁of▁sentence]>",
        "clean_up_tokenization_spaces": False, "eos_token": "<[end▁of▁sentence]>", "mask_token": "<[MASK_TOKEN]>",
        "model_max_length": 8192, "pad_token": "<[PAD▁TOKEN]>", "tokenizer_class": "PreTrainedTokenizerFast"})


def write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor], code_files: tuple[str, ...]) -> None:
    """config.json, model.safetensors, and the modeling files the repo ships: they raise if imported,
    so a test passes only if no remote code ever runs."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    for name in code_files:
        (path / name).write_text('raise RuntimeError("the published modeling code was run")\n')


BUILDERS = {"fast-dllm-v2": fast_dllm_v2, "sdar": sdar, "stable-diffcoder": stable_diffcoder}
