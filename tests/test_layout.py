"""Context budget: token-accurate, nearest-the-cursor text kept on both sides."""

import pytest
from transformers import AutoTokenizer

from fim_server.engine.layout import PREFIX_SHARE, fit_context


@pytest.fixture(scope="module")
def tok(random_dlm_dir):
    return AutoTokenizer.from_pretrained(random_dlm_dir)


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_short_document_is_kept_whole(tok):
    ctx = fit_context(tok, "def f(x):\n    ", "\nprint(f(1))\n", 200)
    assert not ctx.truncated
    assert ctx.prefix_ids == enc(tok, "def f(x):\n    ")
    assert ctx.suffix_ids == enc(tok, "\nprint(f(1))\n")


def test_budget_is_exact_and_keeps_text_next_to_the_cursor(tok):
    prefix = "".join(f"a{i} = {i}\n" for i in range(400))
    suffix = "".join(f"b{i} = {i}\n" for i in range(400))
    ctx = fit_context(tok, prefix, suffix, 100)
    assert ctx.truncated
    assert len(ctx.prefix_ids) + len(ctx.suffix_ids) == 100
    assert len(ctx.prefix_ids) == int(PREFIX_SHARE * 100)
    assert tok.decode(ctx.prefix_ids).endswith("a399 = 399\n")       # nearest the cursor survives
    assert tok.decode(ctx.suffix_ids).startswith("b0 = 0\n")


def test_short_side_gives_its_share_to_the_other(tok):
    prefix = "".join(f"a{i} = {i}\n" for i in range(400))
    ctx = fit_context(tok, prefix, "\n", 100)
    assert len(ctx.suffix_ids) == len(enc(tok, "\n"))
    assert len(ctx.prefix_ids) + len(ctx.suffix_ids) == 100


def test_huge_document_only_tokenizes_what_it_needs(tok):
    ctx = fit_context(tok, "x = 1\n" * 2_000_000, "y = 2\n" * 2_000_000, 64)
    assert ctx.truncated and len(ctx.prefix_ids) + len(ctx.suffix_ids) == 64


def test_empty_sides(tok):
    ctx = fit_context(tok, "", "", 10)
    assert ctx.prefix_ids == [] and ctx.suffix_ids == [] and not ctx.truncated
