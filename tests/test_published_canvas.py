"""Published full-attention diffusion coders, loaded natively (their remote code never runs).

Each case is a tiny checkpoint directory in the exact published layout: config.json with the real
model_type, architectures, auto_map and key names (only widths and depths shrunk), the real tensor
names, a tokenizer in the files the repo ships whose special tokens carry the real ids over the
real vocabulary size, and the repo's modeling files as stubs that raise if anything imports them.
Each loads through `--model DIR`'s code path, its logits are checked against a reference forward
written here from the published modeling code (plain torch, float64), and it completes through
`fim-server complete` and a worker.

Sources (see /work/shared/notes/dllm-checkpoints.md): modeling_dream.py and modeling_llada.py as
vendored by ZHZisZZ/dllm, CoDALanguageModel/* in SalesforceAIResearch/CoDA, Open-dLLM's veomni
Qwen2 and tasks/train_torch.py (pengzhangzhi/Open-dLLM), DreamOn's eval code (DreamLM/DreamOn).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from fim_server.models import load_model
from fim_server.models.random_init import SAMPLE_CODE, train_bpe

HIDDEN, INTERMEDIATE, LAYERS, HEADS = 32, 64, 2, 4

# Qwen2.5's added tokens, 151643-151664 (CoDA's added_tokens.json lists them with their ids)
QWEN_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
              "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
              "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
              "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>"]
QWEN_SPECIALS = {151643 + i: t for i, t in enumerate(QWEN_ADDED)}

# Tensor names: the Qwen2/Qwen3 checkpoints (Dream, DiffuCoder, DreamOn, Open-dCoder, CoDA) and
# LLaDA's OLMo names (modeling_llada.py: LLaDAModelLM.model.transformer, LLaDALlamaBlock).
QWEN_NAMES = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "head": "lm_head.weight",
              "layer": "model.layers.{i}.", "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
              "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
LLADA_NAMES = {"embed": "model.transformer.wte.weight", "norm": "model.transformer.ln_f.weight",
               "head": "model.transformer.ff_out.weight", "layer": "model.transformer.blocks.{i}.",
               "attn_norm": "attn_norm", "mlp_norm": "ff_norm", "q": "q_proj", "k": "k_proj", "v": "v_proj",
               "o": "attn_out", "gate": "ff_proj", "up": "up_proj", "down": "ff_out"}


@dataclass(frozen=True)
class Case:
    name: str
    config: dict                     # config.json as published, widths and depths shrunk
    names: dict                      # tensor names (QWEN_NAMES or LLADA_NAMES)
    specials: dict                   # special token id -> text
    tokenizer_config: dict           # tokenizer_config.json keys besides added_tokens_decoder
    tokenizer_files: str             # "tokenizer.json" or "vocab.json" (+ merges.txt)
    remote_code: tuple = ()          # the modeling files the repo ships (written as raising stubs)
    qkv_bias: bool = False
    qk_norm: bool = False
    tied: bool = False
    # what loading must find
    family: str = ""
    shifted: bool = True
    transformers_class: str = ""
    ids: dict = field(default_factory=dict)      # TokenIds field -> real id


def dream_config(**changes) -> dict:
    """Dream's config.json (apple/DiffuCoder-7B-Instruct's, the DreamConfig format of the lineage)."""
    return {"architectures": ["DreamModel"], "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
            "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": HIDDEN,
            "initializer_range": 0.02, "intermediate_size": INTERMEDIATE, "mask_token_id": 151666,
            "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "Dream",
            "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "num_key_value_heads": 2,
            "pad_token_id": 151643, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
            "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.46.2", "use_cache": False, "use_mrope": False,
            "use_sliding_window": False, "vocab_size": 152064, **changes}


# DreamTokenizer's tokenizer_config.json: its own class through auto_map (remote code), the bos the
# Dream demos and DreamOn prepend, the mask token they read as tokenizer.mask_token
DREAM_TOKENIZER_CONFIG = {
    "add_bos_token": False, "add_prefix_space": False, "errors": "replace",
    "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}, "tokenizer_class": "DreamTokenizer",
    "bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "mask_token": "<|mask|>", "unk_token": None, "model_max_length": 131072, "clean_up_tokenization_spaces": False}


DREAM_SPECIALS = {**QWEN_SPECIALS, 151665: "<|beginoftext|>", 151666: "<|mask|>"}
DREAM_FILES = ("configuration_dream.py", "modeling_dream.py", "generation_utils.py", "tokenization_dream.py")
DREAM_IDS = {"mask": 151666, "end_of_middle": (151643, 151645), "bos": 151665, "expand": None, "pad": 151643}

CASES = [
    Case("dream-v0", dream_config(), QWEN_NAMES, DREAM_SPECIALS, DREAM_TOKENIZER_CONFIG,
         "vocab.json", DREAM_FILES, qkv_bias=True, family="dream", transformers_class="Qwen2ForCausalLM",
         ids=DREAM_IDS),
    Case("diffucoder", dream_config(transformers_version="4.51.3"), QWEN_NAMES, DREAM_SPECIALS,
         DREAM_TOKENIZER_CONFIG, "vocab.json", DREAM_FILES, qkv_bias=True, family="dream",
         transformers_class="Qwen2ForCausalLM", ids=DREAM_IDS),
    # DreamOn-v0-7B: a Dream-Coder checkpoint (bos <|beginoftext|>, 32k positions) plus <|expand|>
    Case("dreamon", dream_config(bos_token_id=151665, max_position_embeddings=32768), QWEN_NAMES,
         {**DREAM_SPECIALS, 151667: "<|expand|>"}, DREAM_TOKENIZER_CONFIG, "vocab.json",
         DREAM_FILES, qkv_bias=True, family="dreamon", transformers_class="Qwen2ForCausalLM",
         ids={"mask": 151666, "expand": 151667, "delete": 151643, "end_of_middle": (151643,), "bos": 151665}),
    # Open-dCoder-0.5B: Qwen2.5-Coder-0.5B saved by veomni's Qwen2ForCausalLM (Qwen2Config: a plain
    # qwen2 checkpoint, tied head) with the mask token train_torch.py adds, <M>, after 151664
    Case("open-dcoder",
         {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
          "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02,
          "intermediate_size": INTERMEDIATE, "max_position_embeddings": 32768, "max_window_layers": 24,
          "model_type": "qwen2", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
          "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
          "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
          "transformers_version": "4.51.3", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
         QWEN_NAMES, {**QWEN_SPECIALS, 151665: "<M>"},
         {"add_prefix_space": False, "tokenizer_class": "Qwen2Tokenizer", "bos_token": None,
          "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<M>", "unk_token": None,
          "errors": "replace", "model_max_length": 32768, "split_special_tokens": False},
         "tokenizer.json", qkv_bias=True, tied=True, family="open-dcoder", transformers_class="Qwen2ForCausalLM",
         ids={"mask": 151665, "end_of_middle": (151643,), "bos": None, "expand": None}),
    Case("llada",
         {"activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
          "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
          "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                       "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                       "AutoModel": "modeling_llada.LLaDAModelLM"},
          "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": HIDDEN,
          "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
          "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
          "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
          "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
          "mlp_hidden_size": INTERMEDIATE, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
          "n_heads": HEADS, "n_kv_heads": HEADS, "n_layers": LAYERS, "pad_token_id": 126081,
          "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
          "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "use_cache": False,
          "vocab_size": 126464, "weight_tying": False},
         LLADA_NAMES,
         {126080: "<|startoftext|>", 126081: "<|endoftext|>", 126336: "<|mdm_mask|>",
          126346: "<|start_header_id|>", 126347: "<|end_header_id|>", 126348: "<|eot_id|>"},
         {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>",
          "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
          "model_max_length": 1000000000000000019884624838656},
         "tokenizer.json", ("configuration_llada.py", "modeling_llada.py"), family="llada", shifted=False,
         transformers_class="LlamaForCausalLM",
         ids={"mask": 126336, "end_of_middle": (126081, 126348), "bos": 126080, "expand": None, "pad": 126081}),
    # CoDA-v0: SalesforceAIResearch/CoDA CoDALanguageModel/config.json verbatim but for the widths
    # (head_dim shrinks with them: the modeling reshapes heads * head_dim to hidden_size)
    Case("coda",
         {"architectures": ["CoDALanguageModel"], "attention_bias": False, "attention_dropout": 0.0,
          "attention_kernel": "flash_attention",
          "auto_map": {"AutoConfig": "model_config.CoDAConfig", "AutoModel": "modeling_coda.CoDALanguageModel"},
          "block_masking_probability": [0.25, 0.5, 0.5, 0.75, 0.25], "head_dim": HIDDEN // HEADS,
          "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
          "mask_block_sizes": [4, 8, 16, 32], "mask_token_id": 151669, "max_position_embeddings": 40960,
          "max_window_layers": 28, "model_type": "CoDA", "num_attention_heads": HEADS,
          "num_hidden_layers": LAYERS, "num_key_value_heads": 2, "pad_token_id": 151643, "prefix_probability": 0,
          "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 1000000,
          "sampling_eps": [0.001, 0.25, 0.5, 0.25, 0.001], "sliding_window": None, "torch_dtype": "float32",
          "transformers_version": "4.47.1", "truncate_probability": 0, "use_cache": True,
          "use_sliding_window": False, "vocab_size": 151936},
         QWEN_NAMES,
         {**QWEN_SPECIALS, 151665: "<tool_response>", 151666: "</tool_response>", 151667: "<think>",
          151668: "</think>", 151669: "<|mask|>"},
         {"add_bos_token": False, "add_prefix_space": False, "bos_token": "<|im_end|>",
          "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
          "mask_token": "<|mask|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
          "padding_side": "right", "sep_token": "<|file_sep|>", "split_special_tokens": False,
          "tokenizer_class": "Qwen2Tokenizer", "unk_token": None},
         "tokenizer.json", ("model_config.py", "modeling_coda.py", "attention.py", "generation_utils.py",
                            "modeling_utils.py"),
         qk_norm=True, family="coda", transformers_class="Qwen3ForCausalLM",
         ids={"mask": 151669, "end_of_middle": (151643, 151645), "bos": None, "expand": None, "pad": 151643}),
]


# ---------------------------------------------------------------- building a checkpoint


def dims(case: Case) -> dict:
    """Widths read from the case's own config keys (Qwen or OLMo names)."""
    c = case.config
    heads = c.get("num_attention_heads", c.get("n_heads"))
    hidden = c.get("hidden_size", c.get("d_model"))
    return {"vocab": c.get("embedding_size") or c["vocab_size"], "hidden": hidden, "heads": heads,
            "kv": c.get("num_key_value_heads", c.get("n_kv_heads")), "head_dim": c.get("head_dim") or hidden // heads,
            "inter": c.get("intermediate_size", c.get("mlp_hidden_size")),
            "layers": c.get("num_hidden_layers", c.get("n_layers")), "eps": c["rms_norm_eps"],
            "theta": float(c["rope_theta"])}


def random_tensors(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor the published checkpoint holds, under its published name."""
    d, n = dims(case), case.names
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.2):
        return torch.randn(*shape, generator=gen) * std

    def norm(size):
        return 1 + rand(size, std=0.1)

    q, kv = d["heads"] * d["head_dim"], d["kv"] * d["head_dim"]
    t = {n["embed"]: rand(d["vocab"], d["hidden"], std=0.5), n["norm"]: norm(d["hidden"])}
    if not case.tied:
        t[n["head"]] = rand(d["vocab"], d["hidden"])
    for i in range(d["layers"]):
        p = n["layer"].format(i=i)
        shapes = {"q": (q, d["hidden"]), "k": (kv, d["hidden"]), "v": (kv, d["hidden"]), "o": (d["hidden"], q),
                  "gate": (d["inter"], d["hidden"]), "up": (d["inter"], d["hidden"]), "down": (d["hidden"], d["inter"])}
        for role, shape in shapes.items():
            t[f"{p}{n[role]}.weight"] = rand(*shape)
        if case.qkv_bias:
            for role in ("q", "k", "v"):
                t[f"{p}{n[role]}.bias"] = rand(shapes[role][0], std=0.1)
        if case.qk_norm:
            t[f"{p}{n['q_norm']}.weight"] = norm(d["head_dim"])
            t[f"{p}{n['k_norm']}.weight"] = norm(d["head_dim"])
        t[f"{p}{n['attn_norm']}.weight"] = norm(d["hidden"])
        t[f"{p}{n['mlp_norm']}.weight"] = norm(d["hidden"])
    return t


def base_vocab(size: int) -> tuple[dict[str, int], list[list[str]]]:
    """A byte-level BPE (trained on a little code) padded with filler tokens to `size` entries."""
    model = json.loads(train_bpe([SAMPLE_CODE] * 4, 400, []).to_str())["model"]
    vocab = dict(model["vocab"])
    for i in range(size - len(vocab)):
        vocab[f"<unused_{i}>"] = len(vocab)
    return vocab, model["merges"]


def write_tokenizer(case: Case, out: Path) -> None:
    """The special tokens at their real ids, base tokens below them, `<|reserved_N|>` filling gaps."""
    first, last = min(case.specials), max(case.specials)
    vocab, merges = base_vocab(first)
    added = [case.specials.get(i, f"<|reserved_{i}|>") for i in range(first, last + 1)]
    decoder = {str(first + j): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": text in case.specials.values()}
               for j, text in enumerate(added)}
    if case.tokenizer_files == "vocab.json":      # the slow tokenizer's files (DreamTokenizer)
        (out / "vocab.json").write_text(json.dumps(vocab))
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    else:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        for text in added:              # one at a time, so each gets the next id
            tok.add_tokens([AddedToken(text, special=text in case.specials.values(), normalized=False)])
        tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder,
                                                           **case.tokenizer_config}, indent=1))


def build(case: Case, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(case.config, indent=1))
    save_file(random_tensors(case), str(out / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(case, out)
    for name in case.remote_code:   # importing any of them is running the checkpoint's code
        (out / name).write_text(f"raise RuntimeError('remote code ran: {name}')\n")
    return out


@pytest.fixture(scope="module")
def offline():
    """No hub access for the workers started here (in this process every path is a local directory)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


BY_NAME = {c.name: c for c in CASES}
# one case per family for the end-to-end tests (DiffuCoder decodes as Dream's family)
FAMILY_CASES = [name for name in BY_NAME if name != "diffucoder"]


@pytest.fixture(scope="module", params=list(BY_NAME))
def published(request, tmp_path_factory, offline):
    """(case, checkpoint directory, the canvas engine on it in float64), built once per case."""
    from fim_server.engine import load_engine

    case = BY_NAME[request.param]
    path = build(case, tmp_path_factory.mktemp(case.name))
    return case, path, load_engine("diffusion", str(path), device="cpu", dtype="float64")


# ---------------------------------------------------------------- the reference forward


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as the published code runs it: normalised in float32, scaled in the model's dtype."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return w * x32.to(x.dtype)


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE over the whole head at positions 0..T-1, x [H, T, d]. The angle tables are
    float32 in every one of these models (inv_freq and cos/sin computed in float). LLaDA's code
    also rotates q and k in float32 (rope_full_precision), Llama in the model's dtype: the same in
    float32, apart by rounding in bfloat16; here, in float64, the rotation itself is exact."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))      # [d/2]
    angles = torch.arange(x.shape[1]).float()[:, None] * inv[None, :]                 # [T, d/2]
    emb = torch.cat([angles, angles], dim=-1)                                          # [T, d]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def reference_logits(t: dict[str, torch.Tensor], ids: list[int], case: Case) -> torch.Tensor:
    """[T, V] logits of the published forward: pre-norm blocks, full bidirectional attention
    (key/value heads shared by consecutive query heads), SwiGLU, final norm, head (or the
    embedding when tied). No shift here: the convention is the decoder's."""
    d, n = dims(case), case.names
    h = t[n["embed"]][ids]                                                    # [T, D]
    T = len(ids)

    def linear(x, prefix):
        y = x @ t[prefix + ".weight"].T
        return y + t[prefix + ".bias"] if prefix + ".bias" in t else y

    for i in range(d["layers"]):
        p = n["layer"].format(i=i)
        x = rms(h, t[f"{p}{n['attn_norm']}.weight"], d["eps"])
        q = linear(x, p + n["q"]).view(T, d["heads"], d["head_dim"])
        k = linear(x, p + n["k"]).view(T, d["kv"], d["head_dim"])
        v = linear(x, p + n["v"]).view(T, d["kv"], d["head_dim"])
        if case.qk_norm:                    # CoDA: RMSNorm over each head, before RoPE
            q = rms(q, t[f"{p}{n['q_norm']}.weight"], d["eps"])
            k = rms(k, t[f"{p}{n['k_norm']}.weight"], d["eps"])
        q, k, v = (z.transpose(0, 1) for z in (q, k, v))                       # [H or KV, T, hd]
        q, k = rope(q, d["theta"]), rope(k, d["theta"])
        rep = d["heads"] // d["kv"]
        k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d["head_dim"]), dim=-1)   # [H, T, T]
        attn = (weights @ v).transpose(0, 1).reshape(T, -1)                   # [T, H * hd]
        h = h + linear(attn, p + n["o"])
        x = rms(h, t[f"{p}{n['mlp_norm']}.weight"], d["eps"])
        gated = torch.nn.functional.silu(linear(x, p + n["gate"])) * linear(x, p + n["up"])
        h = h + linear(gated, p + n["down"])
    h = rms(h, t[n["norm"]], d["eps"])
    return h @ t[n["embed"] if case.tied else n["head"]].T


# ---------------------------------------------------------------- tests


def test_loads_natively_and_matches_the_published_forward(published):
    from fim_server.engine.types import InfillRequest
    from fim_server.wire.options import DecodeConfig

    case, path, engine = published
    lm = engine.lm
    assert type(lm.model).__name__ == case.transformers_class
    assert lm.family.name == case.family

    # 1. logits: bos? + prefix tokens + masks + suffix tokens, full attention both ways
    mask = case.ids["mask"]
    lead = [case.ids["bos"]] if case.ids["bos"] is not None else []
    ids = lead + [5, 17, 200, 3] + [mask] * 4 + [42, 7, min(case.specials)]
    full = torch.ones(1, 1, len(ids), len(ids), dtype=torch.bool)
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids]), attention_mask=full,
                       position_ids=torch.arange(len(ids))[None]).logits[0]
    t = {k: v.double() for k, v in load_file(path / "model.safetensors").items()}
    torch.testing.assert_close(out, reference_logits(t, ids, case), atol=1e-9, rtol=0)

    # 2. the logit convention the family declares is the one the canvas engine decodes with:
    # canvas slot 0 is read at the last lead position (shifted) or at its own (unshifted)
    assert lm.family.shifted is case.shifted and engine.shifted is case.shifted
    row = engine.start(InfillRequest("def f(x):\n    return ", "\n"), DecodeConfig(max_tokens=4, length="fixed"))
    assert row.window(engine.shifted)[0] == len(row.lead) - (1 if case.shifted else 0)

    # 3. the special ids the family resolves are the published ones
    for name, real in case.ids.items():
        assert getattr(lm.ids, name) == real, name
    assert mask in lm.ids.banned


@pytest.mark.parametrize("published", FAMILY_CASES, indirect=True)
def test_completes_through_the_cli(published, tmp_path, capsys):
    from fim_server import cli

    case, path, _ = published
    (tmp_path / "p.py").write_text("def add(a, b):\n    return ")
    (tmp_path / "s.py").write_text("\n\nprint(add(1, 2))\n")
    rc = cli.main(["complete", "--model", str(path), "--engine", "diffusion", "--device", "cpu",
                   "--prefix-file", str(tmp_path / "p.py"), "--suffix-file", str(tmp_path / "s.py"),
                   "--max-tokens", "8", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    assert isinstance(out["completion"], str) and out["family"] == case.family
    assert out["engine"] == "diffusion" and out["nfe"] >= 1 and out["steps"] >= 1


@pytest.mark.parametrize("published", FAMILY_CASES, indirect=True)
def test_completes_through_a_worker(published):
    """The real Worker (sockets, scheduler, compute thread) on this process, serving as `fim-server
    serve --model DIR` does: load_engine (here in float64), the family's defaults as the base."""
    from fim_server.wire.client import SyncWorkerClient
    from fim_server.worker.server import Worker, WorkerOptions

    case, path, engine = published
    sock_dir = tempfile.mkdtemp(prefix="fimp-")
    stop = threading.Event()
    worker = Worker(WorkerOptions(bind=f"ipc://{sock_dir}/w.sock"), stop)
    info = {"model": str(path), "family": engine.lm.family.name, "device": "cpu", "random_weights": True}
    thread = threading.Thread(target=worker.run, args=(engine, info, engine.default_config()), daemon=True)
    thread.start()
    try:
        with SyncWorkerClient(worker.endpoint) as client:
            reply = client.infill("def add(a, b):\n    return ", "\n", max_tokens=8, deadline_s=60)
        assert isinstance(reply.text, str) and not reply.cancelled
        assert reply.stats["family"] == case.family and reply.stats["nfe"] >= 1
    finally:
        stop.set()
        thread.join(30)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_a_spawned_worker_serves_a_published_checkpoint(tmp_path_factory, offline):
    """`fim-server serve --model DIR` as its own process, on the layout with renamed tensors."""
    from fim_server.wire.client import SyncWorkerClient
    from fim_server.wire.spawn import SpawnedWorker

    case = BY_NAME["llada"]
    path = build(case, tmp_path_factory.mktemp("llada-served"))
    sock_dir = tempfile.mkdtemp(prefix="fimp-")
    worker = SpawnedWorker(f"ipc://{sock_dir}/w.sock", Path(sock_dir) / "worker.log", model=str(path),
                           threads=1, extra=("--device", "cpu"), timeout=120)
    try:
        with SyncWorkerClient(worker.address) as client:
            reply = client.infill("def add(a, b):\n    return ", "\n", max_tokens=8, deadline_s=60)
        assert isinstance(reply.text, str) and reply.stats["family"] == "llada" and reply.stats["nfe"] >= 1
    finally:
        assert worker.stop() == 0, worker.log()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.parametrize("config", [
    {"model_type": "foo", "architectures": ["FooForDiffusion"],
     "auto_map": {"AutoConfig": "configuration_foo.FooConfig", "AutoModel": "modeling_foo.FooModel"}},
    # LLaDA-MoE-7B-A1B: LLaDA's model_type, another architecture (OLMoE experts)
    {"model_type": "llada", "architectures": ["LLaDAMoEModelLM"], "num_experts": 64, "num_experts_per_tok": 8,
     "auto_map": {"AutoConfig": "configuration_lladamoe.LLaDAConfig",
                  "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM"}},
], ids=["unknown", "llada-moe"])
def test_unsupported_custom_code_is_refused_naming_the_layouts(tmp_path, config, offline):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="supported published layouts: .*coda.*dream.*llada"):
        load_model(str(tmp_path), kind="diffusion", device="cpu")
