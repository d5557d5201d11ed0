"""Post-processing of generated middles: each rule on hand-made cases, and what must be kept."""

import pytest

from fim_server.engine.postprocess import (first_line, fix_indentation, line_complete, postprocess,
                                    trim_suffix_overlap)


# --- single-line mode ---------------------------------------------------------------------

@pytest.mark.parametrize("middle, done", [
    ("x = 1", False),
    ("x = 1\n", True),
    ("x = 1\n    y", True),
    ("\n", False),                 # only opened a new line: the line is still to come
    ("\n    ", False),
    ("  \n\t\n", False),
    ("\n    return x", False),
    ("\n    return x\n", True),
    ("", False),
])
def test_line_complete(middle, done):
    assert line_complete(middle) is done


@pytest.mark.parametrize("middle, cut", [
    ("x = 1", "x = 1"),
    ("x = 1\ny = 2\n", "x = 1"),
    ("\n    return x\n    pass", "\n    return x"),   # leading newline kept: it opens the line
    ("   \n  x\n", "   \n  x"),
    ("\n\n", "\n\n"),                                  # nothing to cut at
    ("", ""),
])
def test_first_line(middle, cut):
    assert first_line(middle) == cut


def test_first_line_agrees_with_line_complete():
    for middle in ["a\nb", "\n a\n", "  ", "\n", "ab", "x\n\n"]:
        assert line_complete(middle) == (first_line(middle) != middle)


# --- repeated lines -----------------------------------------------------------------------

def test_trims_whole_lines_repeated_by_the_suffix():
    middle = "    y = x * 2\n    return y\n"
    suffix = "    return y\n\nprint(f(1))\n"
    assert trim_suffix_overlap(middle, suffix) == "    y = x * 2\n"


def test_trims_several_repeated_lines_ignoring_trailing_whitespace():
    middle = "    a = 1\n    b = 2   \n    return a + b\n"
    suffix = "    b = 2\n    return a + b  \nx = 3\n"
    assert trim_suffix_overlap(middle, suffix) == "    a = 1\n"


def test_trims_repeated_lines_when_suffix_starts_with_newline():
    # cursor at the end of `def f(x):`; the middle's last line is complete and repeats the suffix
    middle = "\n    y = x * 2\n    return y"
    suffix = "\n    return y\n"
    assert trim_suffix_overlap(middle, suffix) == "\n    y = x * 2"


def test_keeps_lines_that_differ_in_indentation():
    # the inner `}` closes the if; the suffix's `}` closes the function: not a repeat
    middle = "  if (a) {\n    b();\n  }\n"
    suffix = "}\n"
    assert trim_suffix_overlap(middle, suffix) == middle


def test_keeps_lines_that_do_not_repeat():
    middle = "    y = x + 1\n"
    suffix = "    return y\n"
    assert trim_suffix_overlap(middle, suffix) == middle


def test_keeps_lines_that_appear_later_in_suffix_but_not_at_its_start():
    middle = "    total += x\n"
    suffix = "    print(x)\n    total += x\n"
    assert trim_suffix_overlap(middle, suffix) == middle


def test_blank_line_repeats_alone_are_not_trimmed():
    middle = "x = 1\n\n"
    suffix = "\ndef g():\n"
    assert trim_suffix_overlap(middle, suffix) == middle


def test_first_line_is_not_compared_without_the_prefix():
    # `1\n` completes `x = ` on the cursor line; it is not a line of its own
    assert trim_suffix_overlap("1\n", "1\n") == "1\n"
    assert trim_suffix_overlap("1\n", "1\n", prefix="x = ") == "1\n"


def test_whole_middle_repeating_the_suffix_becomes_empty():
    # cursor on an empty line right above `return x`; the middle writes that line again
    prefix = "def f(x):\n"
    assert trim_suffix_overlap("    return x\n", "    return x\n", prefix=prefix) == ""
    # the indentation was typed already: prefix line + middle line is the repeated line
    prefix = "def f(x):\n    "
    assert trim_suffix_overlap("return x\n", "    return x\n", prefix=prefix) == ""
    # ... but a different line is kept
    assert trim_suffix_overlap("y = x\n", "    return x\n", prefix=prefix) == "y = x\n"


def test_middle_ending_mid_line_keeps_its_lines():
    # the last line joins the suffix's first line: no whole-line trimming
    middle = "x = 1\nfoo("
    suffix = "x = 1\n"
    assert trim_suffix_overlap(middle, suffix) == middle


# --- cursor-line closers ------------------------------------------------------------------

@pytest.mark.parametrize("middle, suffix, expected", [
    ("foo(x))", ")\n", "foo(x)"),                       # the brief's example
    ("foo(x));", ");\n", "foo(x)"),                     # punctuation rides along with `)`
    ("x))", ")\n", "x)"),                               # middle closes two; the suffix one of them
    ("1, 2]", "]\n", "1, 2"),
    ("'a': 1}", "}\n", "'a': 1"),
    ('lo"', '"\n', "lo"),                               # closes a string opened in the prefix
    ('Return the sum."""', '"""\n', "Return the sum."),  # docstring auto-closed by the editor
    ("return x;", ";\n", "return x"),                  # the whole rest of the line repeated
    (")", ")\n", ""),                                   # only the duplicate
    ("    b,\n)", ")\n", "    b,\n"),                   # closing line of a call already there
])
def test_trims_duplicated_closers(middle, suffix, expected):
    assert trim_suffix_overlap(middle, suffix) == expected


@pytest.mark.parametrize("middle, suffix", [
    ("foo(bar(x))", ")\n"),          # balanced: the suffix's `)` closes something else
    ('"a"', '"\n'),                  # a complete string: the suffix's quote is its own
    (";", ";)\n"),                   # for (;;): the suffix holds more than the repeat
    ("x;", ";)\n"),
    ("a, b", ", c)\n"),              # not closers at the end of the middle
    ("foo(x)", "))\n"),
    ("x = 1", "x = 1\n"),            # letters are never trimmed char by char
    ("items[0]", "]\n"),             # balanced brackets
    ("x = 1\n", ")\n"),              # middle ends on a newline: nothing on the cursor line
])
def test_keeps_genuine_closers(middle, suffix):
    assert trim_suffix_overlap(middle, suffix) == middle


# --- indentation --------------------------------------------------------------------------

def test_removes_doubled_indentation_of_first_line_only():
    prefix = "def f(x):\n    "
    middle = "    if x:\n        return 1\n    return 2"
    assert fix_indentation(middle, prefix) == "if x:\n        return 1\n    return 2"


def test_tab_indentation():
    assert fix_indentation("\treturn 1", "def f():\n\t") == "return 1"


@pytest.mark.parametrize("middle, prefix", [
    ("    x = 1", "def f():\n"),         # prefix ends at column 0: nothing typed yet
    ("    x = 1", "y = "),              # prefix's last line has code: spaces are genuine
    ("x = 1", "def f():\n    "),       # not doubled
    ("  x = 1", "def f():\n    "),     # partial overlap: leave it alone
    ("\n    x = 1", "def f():\n    "),  # starts with a newline
])
def test_indentation_kept(middle, prefix):
    assert fix_indentation(middle, prefix) == middle


# --- the whole pipeline -------------------------------------------------------------------

def test_postprocess_single_line_cut_and_closer():
    prefix = "result = compute("
    suffix = ")\nprint(result)\n"
    # one `(` open, the suffix closes it: both of the middle's `)` are repeats
    # (this test once expected "a, b)", which left `compute(a, b))` in the file)
    assert postprocess("a, b))\nprint(result)\n", prefix, suffix, single_line=True) == "a, b"


def test_postprocess_multi_line_keeps_following_lines():
    prefix = "def f(x):\n    "
    suffix = "\n\nprint(f(2))\n"
    middle = "    y = x * 2\n    return y\n"
    assert postprocess(middle, prefix, suffix, single_line=False) == "y = x * 2\n    return y"
    assert postprocess(middle, prefix, suffix, single_line=True) == "y = x * 2"


def test_postprocess_trims_repeat_after_fixing_indentation():
    prefix = "def f(x):\n    "
    suffix = "    return y\n"
    middle = "    y = x + 1\n    return y\n"
    assert postprocess(middle, prefix, suffix, single_line=False) == "y = x + 1\n"


def test_postprocess_strips_trailing_junk_only_before_a_new_line():
    assert postprocess("x = 1  \n\n   ", "", "\nfoo()\n", single_line=False) == "x = 1"
    # the suffix continues the line: the middle's trailing newline + indentation place it
    assert postprocess("if x:\n    ", "", "return 1\n", single_line=False) == "if x:\n    "


@pytest.mark.parametrize("middle", ["", "   ", "\n\n", " \t\n "])
def test_postprocess_whitespace_only_is_empty(middle):
    assert postprocess(middle, "x = ", "\n", single_line=False) == ""
    assert postprocess(middle, "x = ", "", single_line=True) == ""


def test_postprocess_keeps_plain_completion():
    assert postprocess("range(10):", "for i in ", "\n    pass\n", single_line=True) == "range(10):"


# --- once is enough: postprocess is idempotent ----------------------------------------------

def test_the_issue_examples_are_right_and_stable():
    # `x = f(g(` + `a))` + `)`: two open, the suffix closes one, so one `)` of the middle goes
    assert postprocess("a))", "x = f(g(", ")\n", single_line=True) == "a)"
    # doubled indentation goes at once, not one level per pass (8 -> 4 -> 0 before)
    assert postprocess("        y = 1", "def f():\n    ", "\n", single_line=False) == "y = 1"


def _cases():
    """Hand-made middles around closers, indentation and repeated lines, and random ones."""
    import random

    prefixes = ["x = f(g(", "print(", "def f(x):\n    ", "y = ", "s = \"lo", "    if (a and (b", "", "\t"]
    suffixes = [")\n", "))\n", "\n", "\n    return y\n", "\"\n", ");\n", "", "]\n", "x = 1\n"]
    middles = ["a))", "a)", "foo(bar(x))", "        y = 1", "    y = x + 1\n    return y\n", "lo\"", "x;",
               ")", "\n", "b, c]", "return y\n", "x\nx\n", "    ", "a, b))\nprint(r)\n"]
    rng = random.Random(7)
    alphabet = "ab()[]\"'; ,\n    x="
    middles += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    for m in middles:
        for p in prefixes:
            for s in suffixes:
                yield m, p, s


def test_postprocess_is_idempotent():
    for middle, prefix, suffix in _cases():
        for single in (False, True):
            once = postprocess(middle, prefix, suffix, single)
            assert postprocess(once, prefix, suffix, single) == once, (middle, prefix, suffix, single)
