"""LLaDA-8B (Base, Instruct) and LLaDA-1.5 (GSAI-ML): full-attention masked diffusion trained from
scratch, unshifted logits, mask <|mdm_mask|>.

modeling_llada.py is OLMo's code with a Llama block: RMSNorm, RoPE over the whole head (rotate-half),
SwiGLU, no biases, an untied head. So it is LlamaForCausalLM once the OLMo config keys and the
`model.transformer.*` tensor names are translated. LLaDA-MoE reuses model_type "llada" with another
architecture (LLaDAMoEModelLM) and is not matched here: only `architectures` selects this layout.
"""

from __future__ import annotations

from transformers import LlamaConfig

from ..published import Layout, register_layout
from .common import fast_tokenizer

# Settings of the OLMo config under which a LLaDA block is exactly a Llama decoder layer.
LLAMA_EQUIVALENT = {"block_type": "llama", "layer_norm_type": "rms", "layer_norm_with_affine": True,
                    "rope": True, "alibi": False,
                    "activation_type": "silu", "attention_layer_norm": False, "include_bias": False,
                    "include_qkv_bias": False, "bias_for_layer_norm": False, "scale_logits": False,
                    "input_emb_norm": False, "block_group_size": 1, "clip_qkv": None}


def translate(raw: dict) -> LlamaConfig:
    """OLMo-style keys (d_model, n_layers, mlp_hidden_size, weight_tying, ...) -> LlamaConfig."""
    off = {k: raw[k] for k, v in LLAMA_EQUIVALENT.items() if k in raw and raw[k] != v}
    if off:
        raise ValueError(f"this LLaDA checkpoint is not a Llama-equivalent model: {off}")
    heads = raw["n_heads"]
    kv_heads = raw.get("n_kv_heads") or (1 if raw.get("multi_query_attention") else heads)
    return LlamaConfig(
        vocab_size=raw.get("embedding_size") or raw["vocab_size"],      # wte and ff_out have embedding_size rows
        hidden_size=raw["d_model"],
        intermediate_size=raw.get("mlp_hidden_size") or raw.get("mlp_ratio", 4) * raw["d_model"],
        num_hidden_layers=raw["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        hidden_act="silu",
        max_position_embeddings=raw.get("max_sequence_length", 4096),
        rms_norm_eps=raw.get("rms_norm_eps", 1e-5),
        rope_theta=raw.get("rope_theta", 10000.0),
        attention_bias=False, mlp_bias=False,
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        bos_token_id=raw.get("bos_token_id"), eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
    )


# Applied in order by from_pretrained, each to the name the previous ones left. The head comes
# first: after it, every remaining ".ff_out." is a block's down projection.
KEY_MAPPING = {
    r"^model\.transformer\.ff_out\.": "lm_head.",
    r"^model\.transformer\.wte\.": "model.embed_tokens.",
    r"^model\.transformer\.ln_f\.": "model.norm.",
    r"^model\.transformer\.blocks\.": "model.layers.",
    r"\.attn_norm\.": ".input_layernorm.",
    r"\.ff_norm\.": ".post_attention_layernorm.",
    r"\.q_proj\.": ".self_attn.q_proj.",
    r"\.k_proj\.": ".self_attn.k_proj.",
    r"\.v_proj\.": ".self_attn.v_proj.",
    r"\.attn_out\.": ".self_attn.o_proj.",
    r"\.ff_proj\.": ".mlp.gate_proj.",
    r"\.up_proj\.": ".mlp.up_proj.",
    r"\.ff_out\.": ".mlp.down_proj.",
}


LLADA = register_layout(Layout(
    name="llada", family="llada", translate=translate, architectures=("LLaDAModelLM",),
    key_mapping=KEY_MAPPING, load_tokenizer=fast_tokenizer,       # tokenizer.json, not AutoTokenizer's
    description="LLaDA-8B Base/Instruct, LLaDA-1.5: LLaMA-style (OLMo code), full attention, unshifted logits",
))
