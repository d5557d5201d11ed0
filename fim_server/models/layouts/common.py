"""What the layouts share: a published config.json read as a native transformers config, and a
tokenizer read from its tokenizer.json whatever tokenizer class the checkpoint names."""

from __future__ import annotations

from transformers import PreTrainedConfig, PreTrainedTokenizerFast

# config.json keys that name the published modeling code: dropped, the native class replaces it
CUSTOM_CODE_KEYS = ("model_type", "architectures", "auto_map")


def native_config(config_class: type[PreTrainedConfig], raw: dict, drop: tuple[str, ...] = (),
                  block_key: str = "") -> PreTrainedConfig:
    """`raw` as a `config_class`: the published keys are the native ones (the lineage kept its
    base model's names), less the custom-code keys and `drop` (training-only extras). The block
    size the checkpoint was trained with (raw[block_key]) becomes `fim_block_size`, the engine's
    default block (Engine.default_config)."""
    config = config_class(**{k: v for k, v in raw.items() if k not in CUSTOM_CODE_KEYS + drop + (block_key,)})
    if raw.get(block_key):
        config.fim_block_size = int(raw[block_key])
    return config


def fast_tokenizer(source: str) -> PreTrainedTokenizerFast:
    """tokenizer.json with the special tokens of tokenizer_config.json. A checkpoint may name a
    tokenizer class of its own (auto_map, tokenization_*.py): never imported, the file is enough."""
    return PreTrainedTokenizerFast.from_pretrained(source)
