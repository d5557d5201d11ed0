"""Context budget: token-accurate, nearest-the-cursor text kept on both sides."""

import pytest
from transformers import AutoTokenizer

from fim_server.engine.layout import ANCHOR_LINES, PREFIX_SHARE, fit_context


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
    assert len(ctx.prefix_ids) + len(ctx.suffix_ids) == 100         # the suffix takes what the prefix left
    line_tokens = len(enc(tok, "a399 = 399\n"))
    assert int(PREFIX_SHARE * 100) - ANCHOR_LINES * line_tokens <= len(ctx.prefix_ids) <= int(PREFIX_SHARE * 100)
    kept = tok.decode(ctx.prefix_ids)
    assert kept.endswith("a399 = 399\n")                          # nearest the cursor survives
    first_line = int(kept.split(" = ")[0][1:])
    assert first_line % ANCHOR_LINES == 0                          # cut at an anchor line
    assert tok.decode(ctx.suffix_ids).startswith("b0 = 0\n")


def test_typing_at_the_cursor_keeps_the_prefix_start(tok):
    """The kept prefix starts at the same anchor while the user types, so its leading tokens
    (and their KV, reused across requests) stay the same."""
    prefix = "".join(f"a{i} = {i}\n" for i in range(400)) + "def f(x):\n    return "
    suffix = "\nprint(f(2))\n" * 50
    typed = "x + 1 if x else 2"
    starts, lengths = [], []
    for n in range(len(typed) + 1):
        ids = fit_context(tok, prefix + typed[:n], suffix, 120).prefix_ids
        starts.append(tuple(ids[:8]))
        lengths.append(len(ids))
    # the start moves only when the typed text outgrows the room above the anchor, then
    # jumps ANCHOR_LINES lines at once: at most once here (18 characters typed)
    moves = sum(a != b for a, b in zip(starts, starts[1:]))
    assert moves <= 1
    assert sum(a == b for a, b in zip(starts, starts[1:])) >= len(typed) - 1


def test_short_side_gives_its_share_to_the_other(tok):
    prefix = "".join(f"a{i} = {i}\n" for i in range(400))
    ctx = fit_context(tok, prefix, "\n", 100)
    assert len(ctx.suffix_ids) == len(enc(tok, "\n"))
    # all but the suffix's token is the prefix's, less at most the lines above the anchor
    assert 99 - ANCHOR_LINES * len(enc(tok, "a399 = 399\n")) <= len(ctx.prefix_ids) <= 99


def test_huge_document_only_tokenizes_what_it_needs(tok):
    ctx = fit_context(tok, "x = 1\n" * 2_000_000, "y = 2\n" * 2_000_000, 64)
    assert ctx.truncated and len(ctx.prefix_ids) + len(ctx.suffix_ids) == 64


def test_empty_sides(tok):
    ctx = fit_context(tok, "", "", 10)
    assert ctx.prefix_ids == [] and ctx.suffix_ids == [] and not ctx.truncated
