"""The repetition guard: what counts as a loop, where it is cut, and that every engine cuts a
looping middle after the loop's first copy (left-to-right engines stopping there, with fewer
forwards) while the option turned off leaves the loop in."""

import pytest

from fim_server.engine import load_engine
from fim_server.engine.repetition import loop_cut
from fim_server.engine.types import InfillRequest

BLANK = frozenset({0})          # token 0 stands for whitespace in the pure tests


@pytest.mark.parametrize("ids, cut", [
    ([5, 6, 7, 7, 7, 7], 3),                         # one token, 4 copies: the first stays
    ([5, 6, 7, 7, 7], None),                         # 3 copies of a short unit: still code
    ([5, 8, 9, 8, 9, 8, 9, 8, 9, 1], 3),             # `b,` 4 times: cut after the first `b,`
    ([5, 8, 9, 8, 9, 8, 9, 1], None),                # 3 times: `f(b, b, b)` is code
    ([1, 2, 3, 4] * 3, 4),                           # a 4-token unit needs 3 copies
    ([1, 2, 3, 4] * 2 + [9], None),
    ([0, 0, 0, 0, 0, 0, 5], None),                   # whitespace repeats are layout, not loops
    ([3, 0, 3, 0, 3, 0, 3, 0], 2),                   # ... but a unit with something in it counts
])
def test_loop_cut(ids, cut):
    assert loop_cut(ids, BLANK) == cut
    if cut is not None:
        assert loop_cut(ids[:cut], BLANK) is None    # what is kept has no loop left


def test_loop_cut_looks_only_at_the_newest_tokens_when_told():
    ids = [7, 7, 7, 7, 5, 6]
    assert loop_cut(ids, BLANK) == 1
    assert loop_cut(ids, BLANK, new=2) is None       # the loop was complete before them
    assert loop_cut(ids[:4], BLANK, new=1) == 1      # it completes with the newest token


def test_the_first_loop_decides():
    ids = [1, 2, 1, 2, 1, 2, 1, 2, 3, 3, 3, 3]
    assert loop_cut(ids, BLANK) == 2


# the bundled models loop here (checked per engine below); with "]\n" as the suffix the SPM block
# coder (block-s9) closes the list instead
LOOPING = InfillRequest("x = (b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, ",
                        "\n\n\ndef f():\n    pass\n")


@pytest.fixture(scope="module", params=["ar", "block", "lossless", "diffusion"])
def runs(request):
    """The same looping request decoded without and with the guard, by each engine."""
    kind = request.param
    engine = load_engine("block" if kind == "lossless" else kind, dtype="float32")
    # room for the loop to go on well past where it completes, so the guard has forwards to save
    base = engine.default_config().replace(lossless=kind == "lossless", max_tokens=48)
    off = engine.infill([LOOPING], base.replace(repetition_guard=False))[0]
    on = engine.infill([LOOPING], base.replace(repetition_guard=True))[0]
    return kind, engine, off, on


def test_the_guard_cuts_a_loop_and_stops(runs):
    kind, engine, off, on = runs
    cut = loop_cut(off.token_ids, engine.blank_ids)
    assert cut is not None, f"{kind}: the bundled model no longer loops on this request: {off.text!r}"
    assert on.stats.stop_reason == "repeat"
    assert loop_cut(on.token_ids, engine.blank_ids) is None
    assert on.stats.nfe < off.stats.nfe                  # the loop cost no further forwards
    if kind != "diffusion":                              # left to right: the same tokens up to the cut
        assert on.token_ids == off.token_ids[:cut]
