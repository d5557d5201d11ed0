"""A raw prompt carrying a model's FIM tokens, split back into prefix and suffix.

Clients that know no `suffix` field (Continue's `openai` provider, llm-ls, Twinny, llama.vscode's
OpenAI mode) template the prompt themselves with the FIM tokens of the model they think they
talk to. The common sets, in prefix-suffix-middle order unless noted:

    Qwen / CodeGemma   <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>   (<|repo_name|>, <|file_sep|> headers)
    StarCoder          <fim_prefix>P<fim_suffix>S<fim_middle>           (<repo_name>, <file_sep>, <filename>)
    Code Llama         <PRE> P <SUF>S <MID>
    DeepSeek           <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>
    Codestral          [SUFFIX]S[PREFIX]P                               (suffix first; `+++++ path` headers)

Suffix-first orders of the others are understood too. Text before the first FIM token (other
files, in the repository-level templates) comes back as extra context, its header tokens removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class TokenSet:
    name: str
    prefix: str                  # regular expressions: Code Llama's tokens carry optional spaces
    suffix: str
    middle: Optional[str]
    headers: tuple[str, ...] = ()


TOKEN_SETS = (
    TokenSet("qwen", re.escape("<|fim_prefix|>"), re.escape("<|fim_suffix|>"), re.escape("<|fim_middle|>"),
             ("<|repo_name|>", "<|file_sep|>", "<|fim_pad|>", "<|endoftext|>")),
    TokenSet("starcoder", re.escape("<fim_prefix>"), re.escape("<fim_suffix>"), re.escape("<fim_middle>"),
             ("<repo_name>", "<file_sep>", "<filename>", "<gh_stars>", "<fim_pad>", "<|endoftext|>")),
    TokenSet("codellama", r"<PRE> ?", r" ?<SUF>", r" ?<MID>", ("<s>",)),
    TokenSet("deepseek", re.escape("<｜fim▁begin｜>"), re.escape("<｜fim▁hole｜>"),
             re.escape("<｜fim▁end｜>"),
             ("<｜begin▁of▁sentence｜>",)),
    TokenSet("codestral", re.escape("[PREFIX]"), re.escape("[SUFFIX]"), None, ("<s>",)),
)


@dataclass(frozen=True)
class Split:
    prefix: str
    suffix: str
    extra: str                   # text before the first FIM token, headers removed ("" when none)
    tokens: str                  # the token set's name


def split_prompt(prompt: str) -> Optional[Split]:
    """The prompt's prefix, suffix and leading context, or None when it carries no FIM tokens."""
    for tokens in TOKEN_SETS:
        pre = re.search(tokens.prefix, prompt)
        suf = re.search(tokens.suffix, prompt)
        if pre is None or suf is None:
            continue
        mid = re.search(tokens.middle, prompt) if tokens.middle else None
        first, second = (pre, suf) if pre.start() < suf.start() else (suf, pre)
        if mid is not None and mid.start() < second.end():
            mid = None
        inner = prompt[first.end():second.start()]
        last = prompt[second.end():mid.start() if mid else len(prompt)]
        begun = prompt[mid.end():] if mid else ""           # a middle already begun ends the prefix
        prefix, suffix = (inner, last) if first is pre else (last, inner)
        return Split(prefix + begun, suffix, _strip_headers(prompt[:first.start()], tokens.headers), tokens.name)
    return None


def _strip_headers(text: str, headers: tuple[str, ...]) -> str:
    for token in headers:
        text = text.replace(token, "\n" if "sep" in token or "name" in token else "")
    return text.strip("\n")
