"""Model families: what the engine needs to know about a checkpoint, resolved to token ids.

A family is data, not code: which special tokens it uses (by their text, looked up in the
checkpoint's own tokenizer, never hard-coded ids), its logit convention and its context limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Family:
    name: str
    kind: str                                   # "diffusion" (canvas) | "ar" | "block" (block diffusion, PSM)
    model_types: tuple[str, ...] = ()           # config.model_type values this family uses
    shifted: bool = False                       # diffusion: logits at i-1 predict token i (Dream); else at i (LLaDA)
    mask: Optional[str] = None                  # diffusion mask token
    expand: Optional[str] = None                # DreamOn-style: a committed expand becomes two masks
    delete: Optional[str] = None                # DreamOn-style: a committed delete is removed
    end_of_middle: tuple[str, ...] = ()         # tokens that end the middle (first one found wins)
    fim_prefix: Optional[str] = None            # AR PSM prompt: <pre> P <suf> S <mid> -> M <end>
    fim_suffix: Optional[str] = None
    fim_middle: Optional[str] = None
    never_generate: tuple[str, ...] = ()        # special tokens that may not appear inside a middle
    bos: Optional[str] = None                   # prepended to the prompt when the family expects one
    context_tokens: int = 4096                  # default prefix + suffix + middle budget
    defaults: tuple[tuple[str, object], ...] = ()   # published decoding settings: (DecodeConfig option, value)
    description: str = ""

    @property
    def is_diffusion(self) -> bool:
        """The in-place canvas layout ([prefix][masks][suffix], full attention)."""
        return self.kind == "diffusion"

    @property
    def needs_mask(self) -> bool:
        return self.kind in ("diffusion", "block")

    @property
    def needs_psm(self) -> bool:
        """A PSM prompt: <pre> P <suf> S <mid>, then the middle (AR and block diffusion)."""
        return self.kind in ("ar", "block")


@dataclass(frozen=True)
class TokenIds:
    """A family's special tokens resolved against one tokenizer."""

    mask: Optional[int]
    expand: Optional[int]
    delete: Optional[int]
    end_of_middle: tuple[int, ...]
    fim_prefix: Optional[int]
    fim_suffix: Optional[int]
    fim_middle: Optional[int]
    bos: Optional[int]
    banned: tuple[int, ...]          # ids never committed into a middle
    pad: int


# Our bundled twins share one tokenizer (trained by fim_server.train.recipe) with these tokens.
BUNDLED_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
    "<|mask|>", "<|expand|>", "<|delete|>",
)

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


FIM_TINY_DLM = register(Family(
    name="fim-tiny-dlm", kind="diffusion", model_types=("qwen2",), shifted=False,
    mask="<|mask|>", expand="<|expand|>", delete="<|delete|>", end_of_middle=("<|delete|>",),
    never_generate=("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                    "<|fim_pad|>", "<|mask|>"),
    context_tokens=256,
    description="the project's bundled masked-diffusion coder (bidirectional Qwen2, DreamOn-style length)",
))

FIM_TINY_AR = register(Family(
    name="fim-tiny-ar", kind="ar", model_types=("qwen2",),
    fim_prefix="<|fim_prefix|>", fim_suffix="<|fim_suffix|>", fim_middle="<|fim_middle|>",
    end_of_middle=("<|endoftext|>", "<|fim_pad|>"),
    never_generate=("<|mask|>", "<|expand|>", "<|delete|>", "<|fim_prefix|>", "<|fim_suffix|>",
                    "<|fim_middle|>"),
    context_tokens=256,
    description="the project's bundled autoregressive FIM twin (causal Qwen2, PSM)",
))

FIM_TINY_BLOCK = register(Family(
    name="fim-tiny-block", kind="block", model_types=("qwen2",), shifted=True,
    mask="<|mask|>", fim_prefix="<|fim_prefix|>", fim_suffix="<|fim_suffix|>", fim_middle="<|fim_middle|>",
    end_of_middle=("<|endoftext|>", "<|fim_pad|>"),
    never_generate=("<|mask|>", "<|expand|>", "<|delete|>", "<|fim_prefix|>", "<|fim_suffix|>",
                    "<|fim_middle|>"),
    context_tokens=256,
    description="the project's block-diffusion FIM coder (Qwen2 from the AR twin: PSM prompt, "
                "causal across blocks, bidirectional inside one, shifted logits)",
))

QWEN25_CODER = register(Family(
    name="qwen2.5-coder", kind="ar", model_types=("qwen2",),
    fim_prefix="<|fim_prefix|>", fim_suffix="<|fim_suffix|>", fim_middle="<|fim_middle|>",
    end_of_middle=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
    never_generate=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    context_tokens=8192,
    description="Qwen2.5-Coder base models (PSM with <|fim_*|> tokens)",
))

STARCODER2 = register(Family(
    name="starcoder2", kind="ar", model_types=("starcoder2",),
    fim_prefix="<fim_prefix>", fim_suffix="<fim_suffix>", fim_middle="<fim_middle>",
    end_of_middle=("<|endoftext|>", "<file_sep>", "<fim_pad>"),
    never_generate=("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    context_tokens=8192,
    description="StarCoder2 (PSM with <fim_*> tokens)",
))

DEEPSEEK_CODER = register(Family(
    name="deepseek-coder", kind="ar", model_types=("llama",),
    fim_prefix="<｜fim▁begin｜>", fim_suffix="<｜fim▁hole｜>", fim_middle="<｜fim▁end｜>",
    end_of_middle=("<｜end▁of▁sentence｜>", "<|EOT|>"),
    never_generate=("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜begin▁of▁sentence｜>"),
    bos="<｜begin▁of▁sentence｜>",
    context_tokens=8192,
    description="DeepSeek-Coder base (Llama architecture, <｜fim▁begin｜> P <｜fim▁hole｜> S <｜fim▁end｜>)",
))

CODELLAMA = register(Family(
    name="codellama", kind="ar", model_types=("llama",),
    fim_prefix="▁<PRE>", fim_suffix="▁<SUF>", fim_middle="▁<MID>",
    end_of_middle=("▁<EOT>", "</s>"),
    never_generate=("▁<PRE>", "▁<SUF>", "▁<MID>", "<s>"),
    bos="<s>",
    context_tokens=8192,
    description="Code Llama (Llama architecture, <PRE> P <SUF> S <MID>)",
))


# --- Published diffusion coders, full attention (canvas engine); layouts in models/layouts/ ---


# --- Published block-diffusion coders (block engine); layouts in models/layouts/ ---


def _lookup(vocab: dict[str, int], token: Optional[str]) -> Optional[int]:
    return None if token is None else vocab.get(token)


def resolve_tokens(family: Family, vocab: dict[str, int], pad_fallback: Optional[int] = None) -> TokenIds:
    """Turn a family's token texts into ids of one tokenizer; missing required tokens raise."""
    required = ([family.mask] if family.needs_mask else []) + \
        ([family.fim_prefix, family.fim_suffix, family.fim_middle] if family.needs_psm else [])
    missing = [t for t in required if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the {family.name} token(s) {missing}")
    ends = tuple(vocab[t] for t in family.end_of_middle if t in vocab)
    if family.needs_psm and not ends:
        raise ValueError(f"tokenizer has none of the {family.name} end tokens {family.end_of_middle}")
    banned = tuple(sorted({vocab[t] for t in family.never_generate if t in vocab}))
    pad = pad_fallback if pad_fallback is not None else (ends[0] if ends else vocab[family.mask])
    return TokenIds(
        mask=_lookup(vocab, family.mask), expand=_lookup(vocab, family.expand),
        delete=_lookup(vocab, family.delete), end_of_middle=ends,
        fim_prefix=_lookup(vocab, family.fim_prefix), fim_suffix=_lookup(vocab, family.fim_suffix),
        fim_middle=_lookup(vocab, family.fim_middle), bos=_lookup(vocab, family.bos),
        banned=banned, pad=pad,
    )


def detect_family(model_type: str, vocab: dict[str, int], declared: Optional[str] = None) -> Family:
    """Pick a family: the one a checkpoint declares (config.fim_family), else by tokens present."""
    if declared:
        if declared not in FAMILIES:
            raise ValueError(f"unknown model family {declared!r}; known: {', '.join(sorted(FAMILIES))}")
        return FAMILIES[declared]
    for family in FAMILIES.values():
        if family.name.startswith("fim-tiny"):
            continue  # the bundled twins always declare themselves
        if model_type not in family.model_types:
            continue
        probe = [family.mask] if family.is_diffusion else [family.fim_prefix, family.fim_suffix, family.fim_middle]
        if all(t in vocab for t in probe):
            return family
    raise ValueError(
        f"cannot tell which model family a {model_type!r} checkpoint belongs to; "
        f"pass one of: {', '.join(sorted(FAMILIES))}"
    )
