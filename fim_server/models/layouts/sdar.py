"""SDAR (JetAstra/SDAR; HF JetLM/SDAR-{1.7B,4B,8B}-Chat and their -b8 ... -b64 variants).

Qwen3 turned block diffusion. config.json names its own code (model_type "sdar",
SDARForCausalLM) and adds `block_size` and `mask_token_id` plus training switches
(fuse_cross_entropy, ep_size, use_deepep, micro_forward, skip_checkpoint, debug,
block_causal_prompt); the rest are Qwen3's keys. modeling_sdar.py is Qwen3's modeling file
(per-head q/k RMSNorm before RoPE, no biases) with a KV-store switch, so the tensors load into
Qwen3ForCausalLM unrenamed. Logits are unshifted. The MoE variant (SDAR-30B-A3B) is not mapped.
"""

from __future__ import annotations

from transformers import Qwen3Config

from ..published import Layout, register_layout
from .common import fast_tokenizer, native_config

TRAINING_KEYS = ("mask_token_id", "fuse_cross_entropy", "ep_size", "use_deepep", "micro_forward",
                 "skip_checkpoint", "debug", "block_causal_prompt")


def translate(raw: dict) -> Qwen3Config:
    return native_config(Qwen3Config, raw, drop=TRAINING_KEYS, block_key="block_size")


SDAR = register_layout(Layout(
    name="sdar", family="sdar", translate=translate,
    architectures=("SDARForCausalLM",), model_types=("sdar",),
    load_tokenizer=fast_tokenizer,
    description="SDARForCausalLM -> Qwen3ForCausalLM (same tensor names)",
))
