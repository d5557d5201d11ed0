"""CoDA-v0-1.7B (Salesforce; Base, Instruct): Qwen3-1.7B turned into a full-attention diffusion
coder with shifted logits (modeling_coda.py: Qwen3 attention with per-head q/k RMSNorm, SDPA with
`is_causal=False`; "we shift logits at inference time").

Its tensors carry Qwen3ForCausalLM's names. The head is untied although config.json omits
`tie_word_embeddings` and CoDAConfig defaults it to True: CoDALanguageModel keeps its own lm_head
and defines no get_output_embeddings, so nothing ever ties the two.
"""

from __future__ import annotations

from transformers import Qwen3Config

from ..published import Layout, register_layout
from .common import native_config
from .dream import qwen2_tokenizer


def translate(raw: dict) -> Qwen3Config:
    return native_config(Qwen3Config, {**raw, "tie_word_embeddings": False})


CODA = register_layout(Layout(
    name="coda", family="coda", translate=translate, architectures=("CoDALanguageModel",),
    load_tokenizer=qwen2_tokenizer,      # Qwen2Tokenizer files; named directly like Dream's
    description="CoDA-v0-1.7B Base/Instruct: Qwen3, full attention, shifted logits, untied head",
))
