"""Randomly initialised checkpoints of a family's exact architecture, for tests and for
running before trained weights exist. Nothing is downloaded: the tokenizer is a small
byte-level BPE trained here on a few lines of code, with the family's special tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast,
                          Qwen2Config, Starcoder2Config)

from .family import BUNDLED_SPECIAL_TOKENS, FAMILIES, Family

SAMPLE_CODE = '''\
def add(a, b):
    """Return the sum of a and b."""
    return a + b


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()


for i in range(10):
    if i % 2 == 0:
        print(i, "is even")
    else:
        print(i, "is odd")
'''

# Family -> (config class, model_type, extra special tokens the real tokenizer carries)
ARCHITECTURES = {
    "fim-tiny-dlm": Qwen2Config, "fim-tiny-ar": Qwen2Config, "fim-tiny-block": Qwen2Config,
    "qwen2.5-coder": Qwen2Config,
    "starcoder2": Starcoder2Config, "deepseek-coder": LlamaConfig, "codellama": LlamaConfig,
}


def family_special_tokens(family: Family) -> list[str]:
    if family.name.startswith("fim-tiny"):
        return list(BUNDLED_SPECIAL_TOKENS)
    tokens = [family.bos, family.mask, family.expand, family.delete, family.fim_prefix,
              family.fim_suffix, family.fim_middle, *family.end_of_middle, *family.never_generate]
    return list(dict.fromkeys(t for t in tokens if t))


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """A byte-level BPE whose special tokens get the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wrap_tokenizer(tok: Tokenizer, special_tokens: list[str], eos: Optional[str], bos: Optional[str]) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"additional_special_tokens": [t for t in special_tokens if t not in (eos, bos)]})
    if eos:
        fast.eos_token = eos
        fast.pad_token = eos
    if bos:
        fast.bos_token = bos
    return fast


def random_config(family: Family, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                  max_positions: int = 1024, bos_token_id: Optional[int] = None,
                  eos_token_id: Optional[int] = None, pad_token_id: Optional[int] = None):
    cls = ARCHITECTURES[family.name]
    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                  max_position_embeddings=max_positions, tie_word_embeddings=True,
                  # the tokenizer's own ids: the architecture's defaults (Starcoder2's 50256)
                  # would lie outside a small vocabulary
                  bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    config = cls(**kwargs)
    config.fim_family = family.name
    return config


def build_random_checkpoint(out_dir: str | Path, family_name: str = "fim-tiny-dlm", seed: int = 0,
                            hidden: int = 64, layers: int = 2, vocab_size: int = 512) -> Path:
    """Write config.json, model.safetensors and tokenizer files of a random model to out_dir."""
    family = FAMILIES[family_name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = family_special_tokens(family)
    eos = family.end_of_middle[0] if not family.is_diffusion else "<|endoftext|>" if "<|endoftext|>" in specials else None
    tok = train_bpe([SAMPLE_CODE] * 4, vocab_size, specials)
    fast = wrap_tokenizer(tok, specials, eos, family.bos)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = random_config(family, len(fast), hidden=hidden, layers=layers,
                           bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = AutoModelForCausalLM.from_config(config)
    # pad only after construction: as the embedding's padding_idx it would zero that row, and
    # the pad token here is <|endoftext|>, an end-of-middle token the model must be able to emit
    model.config.pad_token_id = fast.pad_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out)
    (out / "RANDOM_WEIGHTS.txt").write_text(
        f"Randomly initialised {family.name} ({config.model_type}) with seed {seed}: not a trained model.\n")
    return out
