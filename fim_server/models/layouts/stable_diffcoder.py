"""Stable-DiffCoder (ByteDance-Seed/Stable-DiffCoder-8B-Base and -Instruct).

Seed-Coder-8B (a Llama) continued as a block-diffusion model. Its config.json already says
model_type "llama" with Llama's keys; only `architectures` (StableDiffcoderForCausalLM) and
`auto_map` point at modeling_stable_diffcoder.py, a LlamaForCausalLM subclass that adds a
block-causal mask and its own generate(). The tensors are Llama's; logits are unshifted.
"""

from __future__ import annotations

from transformers import LlamaConfig

from ..published import Layout, register_layout
from .common import fast_tokenizer, native_config


def translate(raw: dict) -> LlamaConfig:
    return native_config(LlamaConfig, raw)


STABLE_DIFFCODER = register_layout(Layout(
    name="stable-diffcoder", family="stable-diffcoder", translate=translate,
    architectures=("StableDiffcoderForCausalLM",),
    load_tokenizer=fast_tokenizer,
    description="StableDiffcoderForCausalLM -> LlamaForCausalLM (same tensor names)",
))
