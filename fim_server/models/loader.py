"""Load a checkpoint (bundled, local directory or hub id) with its tokenizer and family."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig,
                          PreTrainedTokenizerBase)

from fim_server.measure import cpu_has_bf16_units

from .family import Family, TokenIds, detect_family, resolve_tokens
from .layouts import Layout, find_layout, unsupported_message
from .published import needs_remote_code, read_raw_config

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
BUNDLED = {"diffusion": "fim-tiny-dlm", "ar": "fim-tiny-ar", "block": "fim-tiny-block",
           "speculative": "fim-tiny-dlm"}      # the speculative engine's --model is its diffusion drafter


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    family: Family
    ids: TokenIds
    source: str                      # what was asked for (path or hub id)
    device: torch.device
    dtype: torch.dtype
    context_tokens: int              # prefix + middle + suffix budget: the most a request may use
    default_context_tokens: int = 0  # what a request that names none gets (0: context_tokens);
                                     # a checkpoint's config.fim_default_context_tokens

    def forward(self, cache, **inputs) -> tuple[torch.Tensor, object]:
        """model(**inputs) with the KV cache passed under the name this transformers takes:
        (logits, the cache after the forward)."""
        key = cache_keyword(self.model)
        out = self.model(**inputs, **{key: cache})
        return out.logits, getattr(out, key, None)


def forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    """The names the model's forward takes (read once per class: inspecting the signature at
    every step cost ~3% of an AR step on this CPU)."""
    return _forward_parameters(type(model))


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the forward can project only some positions onto the vocabulary."""
    return "logits_to_keep" in forward_parameters(model)


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward's argument for the KV cache: `cache` from transformers 5.24 on (there the old
    `past_key_values` warns that it goes in 5.40), `past_key_values` before."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def pick_device(device: Optional[str] = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return dev


def pick_dtype(device: torch.device, dtype: Optional[str] = None) -> torch.dtype:
    """The dtype asked for. By default ("auto"): bfloat16 (float16 where it has none) on CUDA;
    on the CPU bfloat16 where it has bf16 units (`cpu_has_bf16_units`: there a forward over a
    block of queries costs about what a one-token forward does, where float32 costs ~1.5x, at the
    same quality, bench/results/*-dtype-*), float32 elsewhere."""
    if dtype in (None, "", "auto"):
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
        dtype = None
    if dtype:
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
                 "float64": torch.float64}
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
        return table[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def bundled_path(kind: str) -> Path:
    """The packaged model of one kind ("diffusion" or "ar")."""
    return BUNDLED_DIR / BUNDLED[kind]


def random_fallback(kind: str) -> str:
    """A randomly initialised checkpoint, for when the bundled weights are not there yet."""
    from .random_init import build_random_checkpoint

    name = "fim-tiny-dlm" if kind == "speculative" else BUNDLED[kind]
    path = Path.home() / ".cache" / "fim-server" / f"random-{name}"
    if not (path / "config.json").exists():
        build_random_checkpoint(path, name, hidden=128, layers=2, vocab_size=1024)
    return str(path)


def resolve_model(model: Optional[str], kind: str) -> tuple[Optional[str], bool]:
    """(model to load, random_weights): the bundled model when there, else a random one (with a
    warning on stderr, so nobody mistakes its output for the model's)."""
    if model is None and not (bundled_path(kind) / "config.json").exists():
        model = random_fallback(kind)
        print(f"warning: no bundled {kind} model: using RANDOM WEIGHTS from {model}", file=sys.stderr)
        return model, True
    return model, False


def resolve_source(name_or_path: Optional[str], kind: str) -> str:
    """None or "bundled" -> the packaged model of this kind; otherwise the path / hub id as given."""
    if name_or_path in (None, "", "bundled"):
        path = bundled_path(kind)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"the bundled {kind} model is missing at {path}; train it with "
                f"`fim-server train --objective {kind}` or pass --model"
            )
        return str(path)
    return name_or_path


def published_layout(source: str, raw: dict) -> Optional[Layout]:
    """The native layout of a published checkpoint (`raw`: its config.json) that ships its own
    modeling code; None when transformers knows the checkpoint as it is. Never runs remote code:
    an unknown one is refused."""
    layout = find_layout(raw)
    if layout is None and needs_remote_code(raw):
        raise ValueError(unsupported_message(source, raw))
    return layout


class Checkpoint(NamedTuple):
    """What a checkpoint is, read without its weights."""

    config: PreTrainedConfig
    tokenizer: PreTrainedTokenizerBase
    vocab: dict[str, int]            # tokenizer.get_vocab(), built once: 0.1 s for 150k tokens
    layout: Optional[Layout]         # its published layout, None for a checkpoint transformers knows
    family: Family


def identify(source: str, family: Optional[str] = None, kind: Optional[str] = None) -> Checkpoint:
    """Read a checkpoint's config and tokenizer: the family is the one given, the one the
    checkpoint declares, or detected (families of `kind` first)."""
    raw = read_raw_config(source)
    layout = published_layout(source, raw)
    if layout is not None:
        config = layout.translate(raw)
        tokenizer = (layout.load_tokenizer or AutoTokenizer.from_pretrained)(source)
    else:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    vocab = tokenizer.get_vocab()
    declared = family or (layout.family_for(vocab) if layout else getattr(config, "fim_family", None))
    return Checkpoint(config, tokenizer, vocab, layout, detect_family(config.model_type, vocab, declared, kind))


def model_kind(name_or_path: str, family: Optional[str] = None) -> str:
    """The engine a checkpoint's family runs on ("diffusion" | "block" | "ar"): what a command
    line that names a model but no engine runs."""
    return identify(name_or_path, family).family.kind


def load_model(
    name_or_path: Optional[str] = None,
    kind: str = "diffusion",
    family: Optional[str] = None,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
) -> LoadedModel:
    """from_pretrained on a local directory or a hub id; the family is declared or detected."""
    source = resolve_source(name_or_path, kind)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    config, tokenizer, vocab, layout, fam = identify(source, family, kind)
    if fam.kind != kind:
        raise ValueError(f"{source} is a {fam.kind} model ({fam.name}); the {kind} engine cannot run it")
    if fam.needs_mask and getattr(config, "fim_logits_shifted", None) is not None:
        # the checkpoint says which convention it was trained with (the bundled twin: AR-initialised, shifted)
        fam = dataclasses.replace(fam, shifted=bool(config.fim_logits_shifted))
    order = getattr(config, "fim_order", None)
    if fam.needs_psm and order is not None:
        # the checkpoint says which prompt order it was trained with (fim-server train --fim-order)
        if order not in ("psm", "spm"):
            raise ValueError(f"{source}: config.json fim_order is {order!r}; psm or spm expected")
        fam = dataclasses.replace(fam, fim_order=order)
    ids = resolve_tokens(fam, vocab, tokenizer.pad_token_id)
    if layout is not None:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, key_mapping=layout.key_mapping,
                                                     dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    model.to(dev).eval()
    limit = getattr(config, "fim_context_tokens", None) or min(
        fam.context_tokens, getattr(config, "max_position_embeddings", fam.context_tokens))
    log.info("loaded %s (%s) on %s in %s", source, fam.name, dev, torch_dtype)
    default = int(getattr(config, "fim_default_context_tokens", 0) or 0)
    return LoadedModel(model=model, tokenizer=tokenizer, family=fam, ids=ids, source=source,
                       device=dev, dtype=torch_dtype, context_tokens=int(limit),
                       default_context_tokens=min(default, int(limit)))
