"""Published diffusion checkpoints, loaded natively: no remote code ever runs.

A published dLLM ships its own modeling file (`auto_map` in config.json) and a config whose
`model_type` transformers does not know. A `Layout` maps such a checkpoint onto a transformers
architecture: it translates the raw config.json into that architecture's config and renames the
checkpoint's tensors (`key_mapping`, regex -> replacement, applied by `from_pretrained`). The
attention regime (full, block-causal) is not a property of the module: the engines pass an
explicit 4-D mask on every forward, so a causal transformers class serves every regime.

Each lineage's layouts live in one module of `layouts/` and register themselves on import;
`layouts` (the package) imports them all and finds the one for a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from transformers import PreTrainedConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Layout:
    name: str                                   # e.g. "dream"
    family: str                                 # the Family (family.py) it decodes as
    translate: Callable[[dict], PreTrainedConfig]   # raw config.json -> a transformers config
    architectures: tuple[str, ...] = ()         # config.json "architectures" values that select it
    model_types: tuple[str, ...] = ()           # config.json "model_type" values (used when no architecture matches)
    key_mapping: dict[str, str] = field(default_factory=dict)   # checkpoint tensor name regex -> transformers name
    load_tokenizer: Optional[Callable[[str], PreTrainedTokenizerBase]] = None  # None: AutoTokenizer, no remote code
    variants: tuple[tuple[str, str], ...] = ()  # (token, family): a tokenizer with that token decodes as that family
    description: str = ""

    def family_for(self, vocab: dict[str, int]) -> str:
        """The lineage's family, or the variant whose own token this tokenizer has (DreamOn's
        <|expand|>: same architecture and config as Dream, another decoding)."""
        return next((family for token, family in self.variants if token in vocab), self.family)


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def read_raw_config(source: str) -> dict:
    """config.json of a local directory or hub id as plain JSON (never through AutoConfig, which
    refuses model types it does not know and would want remote code)."""
    from transformers.utils import cached_file

    path = cached_file(source, "config.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def needs_remote_code(raw: dict) -> bool:
    """Whether transformers could only load this checkpoint by running its own modeling code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return "auto_map" in raw or raw.get("model_type") not in CONFIG_MAPPING
