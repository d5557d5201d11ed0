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
    fim_order: str = "psm"                      # "psm": <pre> P <suf> S <mid>; "spm": <suf> S <pre> P <mid> (Seed-Coder)
    aligned_blocks: bool = False                # block: blocks at multiples of block_size from the prompt's first
                                                # token, the prompt block-causal too (SDAR, Fast-dLLM v2); else a
                                                # causal prompt and blocks from its end (fim-tiny-block)
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


def fim_prompt(prefix: list[int], suffix: list[int], pre: int, suf: int, mid: int, order: str = "psm") -> list[int]:
    """The FIM prompt before the middle: <pre> P <suf> S <mid> in PSM order, <suf> S <pre> P <mid>
    in SPM order (Family.fim_order)."""
    if order == "spm":
        return [suf, *suffix, pre, *prefix, mid]
    return [pre, *prefix, suf, *suffix, mid]


def fim_parts(prompt: list[int], pre: Optional[int], suf: Optional[int],
              mid: Optional[int]) -> Optional[tuple[list[int], list[int]]]:
    """(P, S) of a prompt `fim_prompt` built, in either order (what precedes it, a bos, is not part
    of either); None when one of the three marks is missing."""
    if any(m is None or m not in prompt for m in (pre, suf, mid)):
        return None
    i, j, k = prompt.index(pre), prompt.index(suf), prompt.index(mid)
    if i < j:
        return list(prompt[i + 1:j]), list(prompt[j + 1:k])
    return list(prompt[i + 1:k]), list(prompt[j + 1:i])


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
    description="the project's bundled autoregressive FIM twin (causal Qwen2; PSM, or SPM when its "
                "config.json says fim_order spm, as the bundled stage 9 does)",
))

FIM_TINY_BLOCK = register(Family(
    name="fim-tiny-block", kind="block", model_types=("qwen2",), shifted=True,
    mask="<|mask|>", fim_prefix="<|fim_prefix|>", fim_suffix="<|fim_suffix|>", fim_middle="<|fim_middle|>",
    end_of_middle=("<|endoftext|>", "<|fim_pad|>"),
    never_generate=("<|mask|>", "<|expand|>", "<|delete|>", "<|fim_prefix|>", "<|fim_suffix|>",
                    "<|fim_middle|>"),
    context_tokens=256,
    # b4: 1.6x faster than b8 at better edit similarity (bench/results/engine-block.json); lossless:
    # 0.53-0.65x the AR twin's p50 at edit similarity 0.9-1.7 points below it (bench/results/pair-s9-*)
    defaults=(("block_size", 4), ("lossless", True)),
    description="the project's block-diffusion FIM coder (Qwen2 from the AR twin: PSM or SPM prompt "
                "by config.json fim_order, causal across blocks, bidirectional inside one, shifted logits)",
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

# Chosen by their layout (no model_types: never guessed from tokens), except Open-dCoder, a plain
# qwen2 checkpoint. Defaults, as published: Fast-dLLM's parallel decoding of Dream and LLaDA
# (eval_humaneval.sh: threshold 0.9, blocks of 32); DreamOn's quickstart (4 masks that grow, one
# token a step, the whole middle one block); CoDA's README (BLOCK_LENGTH 32); Open-dLLM's infilling
# eval (a fixed-length middle decoded whole).
QWEN_CONTROL = ("<|im_start|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")

DREAM = register(Family(
    name="dream", kind="diffusion", shifted=True, mask="<|mask|>",
    end_of_middle=("<|endoftext|>", "<|dlm_pad|>", "<|im_end|>"),
    never_generate=("<|mask|>", "<|beginoftext|>", "<|expand|>", *QWEN_CONTROL),
    bos="<|beginoftext|>",
    context_tokens=2048,
    defaults=(("threshold", 0.9), ("block_size", 32)),
    description="Dream-v0, Dream-Coder-v0, DiffuCoder 7B (Qwen2.5 made diffusion): full attention, shifted "
                "logits, mask <|mask|>; infilling as [bos] P [masks] S (DreamOn's fixed-length protocol)",
))

DREAMON = register(Family(
    name="dreamon", kind="diffusion", shifted=True, mask="<|mask|>",
    expand="<|expand|>", delete="<|endoftext|>",      # released code: an end token inside the middle deletes
    end_of_middle=("<|endoftext|>",),
    never_generate=("<|mask|>", "<|beginoftext|>", *QWEN_CONTROL),
    bos="<|beginoftext|>",
    context_tokens=2048,
    defaults=(("length", "expand"), ("initial_length", 4), ("threshold", 1.0), ("block_size", 64)),
    description="DreamOn-v0-7B (Dream-Coder with variable-length infilling): a committed <|expand|> "
                "becomes two masks, an end token inside the middle is deleted",
))

OPEN_DCODER = register(Family(
    name="open-dcoder", kind="diffusion", model_types=("qwen2",), shifted=True, mask="<M>",
    end_of_middle=("<|endoftext|>",),
    never_generate=("<M>", *QWEN_CONTROL),
    context_tokens=4096,
    defaults=(("length", "fixed"), ("block_size", 64)),
    description="Open-dCoder-0.5B (Qwen2.5-Coder-0.5B made diffusion, a plain qwen2 checkpoint): full "
                "attention, shifted logits, mask <M>; infilling as P [masks] S of a fixed length",
))

LLADA = register(Family(
    name="llada", kind="diffusion", shifted=False, mask="<|mdm_mask|>",
    end_of_middle=("<|endoftext|>", "<|eot_id|>"),
    never_generate=("<|mdm_mask|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>"),
    bos="<|startoftext|>",
    context_tokens=4096,
    defaults=(("threshold", 0.9), ("block_size", 32)),
    description="LLaDA-8B Base/Instruct, LLaDA-1.5 (trained from scratch): full attention, unshifted "
                "logits, mask <|mdm_mask|>",
))

CODA = register(Family(
    name="coda", kind="diffusion", shifted=True, mask="<|mask|>",
    end_of_middle=("<|endoftext|>", "<|im_end|>"),
    never_generate=("<|mask|>", *QWEN_CONTROL),
    context_tokens=4096,
    defaults=(("block_size", 32),),
    description="CoDA-v0-1.7B (Qwen3 made diffusion): full attention, shifted logits, mask <|mask|>",
))


# --- Published block-diffusion coders (block engine); layouts in models/layouts/ ---

# None of these was trained on fill-in-the-middle as a diffusion model. Stable-DiffCoder continues
# Seed-Coder, whose pretraining used SPM FIM with its own tokens; Fast-dLLM v2 and SDAR are chat
# models whose tokenizers carry Qwen's FIM tokens, so they get Qwen2.5-Coder's PSM prompt.
QWEN_FIM_ENDS = ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>")
QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")

FAST_DLLM_V2 = register(Family(
    name="fast-dllm-v2", kind="block", shifted=True, aligned_blocks=True,
    mask="|<MASK>|", fim_prefix=QWEN_FIM[0], fim_suffix=QWEN_FIM[1], fim_middle=QWEN_FIM[2],
    end_of_middle=("<|im_end|>", *QWEN_FIM_ENDS),
    never_generate=("|<MASK>|", *QWEN_FIM, "<|im_start|>"),
    context_tokens=8192,
    defaults=(("block_size", 32), ("sub_block_size", 8), ("threshold", 0.9)),
    description="Fast-dLLM v2 1.5B/7B (NVlabs): Qwen2.5-Instruct made block diffusion; blocks of 32 "
                "decoded in sub-blocks of 8, shifted logits. No published infilling: PSM with the Qwen "
                "FIM tokens its tokenizer carries (the Qwen2.5-Coder format; untrained for this model)",
))

SDAR = register(Family(
    name="sdar", kind="block", shifted=False, aligned_blocks=True,
    mask="<|MASK|>", fim_prefix=QWEN_FIM[0], fim_suffix=QWEN_FIM[1], fim_middle=QWEN_FIM[2],
    end_of_middle=(*QWEN_FIM_ENDS, "<|im_end|>"),
    never_generate=("<|MASK|>", *QWEN_FIM, "<|im_start|>"),
    context_tokens=8192,
    defaults=(("block_size", 4), ("threshold", 0.85)),
    description="SDAR 1.7B/4B/8B (JetAstra): Qwen3 made block diffusion; blocks of 4 (the -bN "
                "checkpoints: N, from their config.json), unshifted logits. No published infilling: PSM "
                "with the Qwen FIM tokens its tokenizer carries (untrained for this model)",
))

STABLE_DIFFCODER = register(Family(
    name="stable-diffcoder", kind="block", shifted=False, aligned_blocks=True, fim_order="spm",
    mask="<[MASK_TOKEN]>", fim_prefix="<[fim-prefix]>", fim_suffix="<[fim-suffix]>", fim_middle="<[fim-middle]>",
    end_of_middle=("<[end▁of▁sentence]>",),
    never_generate=("<[MASK_TOKEN]>", "<[fim-prefix]>", "<[fim-suffix]>", "<[fim-middle]>",
                    "<[begin▁of▁sentence]>", "<[PAD▁TOKEN]>"),
    bos="<[begin▁of▁sentence]>",
    context_tokens=8192,
    defaults=(("block_size", 4), ("threshold", 1.0)),
    description="Stable-DiffCoder-8B (ByteDance Seed): Seed-Coder (Llama) made block diffusion; blocks "
                "of 4, one token a step, unshifted logits. Infilling: Seed-Coder's SPM prompt "
                "<[fim-suffix]> S <[fim-prefix]> P <[fim-middle]>",
))


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


def detect_family(model_type: str, vocab: dict[str, int], declared: Optional[str] = None,
                  kind: Optional[str] = None) -> Family:
    """Pick a family: the one a checkpoint declares (config.fim_family), else by tokens present,
    families of the engine's `kind` first (Open-dCoder's tokenizer has Qwen2.5-Coder's FIM tokens
    next to its mask token)."""
    if declared:
        if declared not in FAMILIES:
            raise ValueError(f"unknown model family {declared!r}; known: {', '.join(sorted(FAMILIES))}")
        return FAMILIES[declared]
    for family in sorted(FAMILIES.values(), key=lambda f: f.kind != kind):    # stable: registration order
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
