"""Fast-dLLM v2 (NVlabs; HF Efficient-Large-Model/Fast_dLLM_v2_1.5B and _7B).

Qwen2.5-Instruct fine-tuned into a block-diffusion model. config.json names its own code
(model_type "Fast_dLLM_Qwen", Fast_dLLM_QwenForCausalLM) and adds `bd_size` (32, the block) and
`conplemenrary_mask` (sic; a training switch); every other key is Qwen2's. The 339 tensors are
exactly Qwen2's (q/k/v with biases), so the checkpoint is a Qwen2ForCausalLM under the engine's
block-causal mask, no renaming. Its modeling.py shifts the logits (position i - 1 predicts i).
"""

from __future__ import annotations

from transformers import Qwen2Config

from ..published import Layout, register_layout
from .common import fast_tokenizer, native_config


def translate(raw: dict) -> Qwen2Config:
    return native_config(Qwen2Config, raw, drop=("conplemenrary_mask",), block_key="bd_size")


FAST_DLLM_V2 = register_layout(Layout(
    name="fast-dllm-v2", family="fast-dllm-v2", translate=translate,
    architectures=("Fast_dLLM_QwenForCausalLM",), model_types=("Fast_dLLM_Qwen",),
    load_tokenizer=fast_tokenizer,
    description="Fast_dLLM_QwenForCausalLM -> Qwen2ForCausalLM (same tensor names)",
))
