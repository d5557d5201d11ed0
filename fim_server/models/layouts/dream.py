"""The Dream lineage: Dream-v0 (Base, Instruct), Dream-Coder-v0, DiffuCoder (Base, Instruct,
cpGRPO) and DreamOn-v0, all 7B Qwen2.5 models turned into full-attention, shifted-logit diffusion
coders (modeling_dream.py: a Qwen2 copy with `is_causal=False`).

The checkpoints name their tensors exactly as Qwen2ForCausalLM does, so nothing is renamed; what is
read natively here is config.json (model_type "Dream", DreamConfig in auto_map) and the tokenizer,
which ships as remote code (DreamTokenizer, a slow copy of Qwen2's byte-level BPE over the same
vocab.json and merges.txt). DreamOn differs only by its tokenizer's <|expand|>.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase, Qwen2Config

from ..published import Layout, register_layout
from .common import native_config


def translate(raw: dict) -> Qwen2Config:
    return native_config(Qwen2Config, raw)     # Qwen2's own keys; DreamConfig's untied default is Qwen2's


def qwen2_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Qwen2's byte-level BPE from tokenizer.json or vocab.json + merges.txt, with the special tokens
    of tokenizer_config.json. Named directly: AutoTokenizer would follow the config's auto_map to
    the checkpoint's tokenizer code (and ask on stdin whether to run it)."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(source)


DREAM = register_layout(Layout(
    name="dream", family="dream", translate=translate, architectures=("DreamModel",), model_types=("Dream",),
    load_tokenizer=qwen2_tokenizer, variants=(("<|expand|>", "dreamon"),),
    description="Dream-v0, Dream-Coder-v0, DiffuCoder, DreamOn-v0 (7B): Qwen2, full attention, shifted logits",
))
