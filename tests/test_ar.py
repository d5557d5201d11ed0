"""The autoregressive FIM baseline against transformers' own generate, across families and batches,
and its stop rules on scripted models (a wrapper that forces chosen tokens)."""

import dataclasses
import json

import pytest
import torch

from fim_server.wire.options import RESERVED_TOKENS, DecodeConfig, OptionError
from fim_server.engine.ar import AREngine
from fim_server.engine.layout import fit_context
from fim_server.engine.layout import ANCHOR_LINES
from fim_server.engine.types import InfillRequest
from fim_server.models.loader import cache_keyword
from fim_server.models import load_model
from fim_server.models.random_init import SAMPLE_CODE, build_random_checkpoint
from helpers import liven

AR_FAMILIES = ["fim-tiny-ar", "qwen2.5-coder", "starcoder2", "deepseek-coder", "codellama"]

REQUESTS = [
    InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "r0"),
    InfillRequest("class Stack:\n    def push(self, item):\n        ", "\n    def pop(self):\n        return self.items.pop()\n", "r1"),
    InfillRequest("for i in range(10):\n", "", "r2"),
]

# scripted and reference token streams loop; the repetition guard (tests/test_repetition.py) stays out
GREEDY = DecodeConfig(engine="ar", max_tokens=16, repetition_guard=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family name -> LoadedModel: a random checkpoint of the family's architecture, float32 on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)         # these models are tiny: more threads only add overhead
    loaded = {}
    for i, name in enumerate(AR_FAMILIES):
        path = build_random_checkpoint(tmp_path_factory.mktemp(name.replace(".", "_")), name, seed=i)
        lm = load_model(str(path), kind="ar", device="cpu", dtype="float32")
        liven(lm.model, seed=i)
        loaded[name] = lm
    yield loaded
    torch.set_num_threads(threads)


class Scripted(torch.nn.Module):
    """A model whose logits favour scripts[row][k] at its k-th forward (0 = prefill).

    It wraps the real model, so the engine's cache, masks and positions still run for real.
    """

    def __init__(self, inner: torch.nn.Module, scripts: list[list[int]]):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.scripts = scripts
        self.calls = 0
        self.input_shapes: list[tuple[int, ...]] = []
        self.positions: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []

    def forward(self, input_ids, logits_to_keep=0, cache=None, **kwargs):
        self.input_shapes.append(tuple(input_ids.shape))
        self.positions.append(kwargs["position_ids"].clone())
        self.masks.append(kwargs["attention_mask"].clone())
        out = self.inner(input_ids=input_ids, logits_to_keep=logits_to_keep,
                         **{cache_keyword(self.inner): cache}, **kwargs)
        for row, script in enumerate(self.scripts):
            if self.calls < len(script):
                out.logits[row, -1, script[self.calls]] += 1e4
        self.calls += 1
        return out


def scripted_engine(lm, scripts):
    model = Scripted(lm.model, scripts)
    return AREngine(dataclasses.replace(lm, model=model)), model


def encode(lm, text):
    return lm.tokenizer.encode(text, add_special_tokens=False)


def cut_at_end(ids, ends):
    for j, t in enumerate(ids):
        if t in ends:
            return ids[:j]
    return ids


# --- 1. the same tokens as transformers' generate --------------------------------------

@pytest.mark.parametrize("family", AR_FAMILIES)
def test_greedy_matches_generate(models, family):
    lm = models[family]
    engine = AREngine(lm)
    ids = lm.ids
    for req in REQUESTS:
        ctx = fit_context(lm.tokenizer, req.prefix, req.suffix, engine.budget(GREEDY))
        prompt = engine.prompt(ctx.prefix_ids, ctx.suffix_ids)
        assert prompt[-1] == ids.fim_middle and (ids.bos is None or prompt[0] == ids.bos)
        input_ids = torch.tensor([prompt])
        out = lm.model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
            max_new_tokens=GREEDY.max_tokens, suppress_tokens=list(ids.banned),
            eos_token_id=list(ids.end_of_middle), pad_token_id=ids.pad)
        expected = cut_at_end(out[0, input_ids.shape[1]:].tolist(), ids.end_of_middle)
        [result] = engine.infill([req], GREEDY)
        assert result.token_ids == expected, req.id
        assert len(set(expected)) > 1, "the model should not repeat a single token"
        stats = result.stats
        assert stats.engine == "ar" and stats.cache == ""
        assert stats.tokens == len(expected)
        assert stats.nfe == stats.steps == len(expected) + (stats.stop_reason == "end")
        assert stats.prompt_tokens == len(ctx.prefix_ids) + len(ctx.suffix_ids)
        assert not stats.truncated


# --- 2. batching does not change the tokens -------------------------------------------------

@pytest.mark.parametrize("family", AR_FAMILIES)
def test_batch_equals_one_by_one(models, family):
    engine = AREngine(models[family])
    config = GREEDY.replace(max_tokens=12)
    together = engine.infill(REQUESTS, config)
    alone = [engine.infill([r], config)[0] for r in REQUESTS]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.stats.stop_reason for r in together] == [r.stats.stop_reason for r in alone]


def test_rows_finishing_early_do_not_disturb_the_others(models):
    lm = models["fim-tiny-ar"]
    end = lm.ids.end_of_middle[0]
    config = GREEDY.replace(max_tokens=10)
    alone = AREngine(lm).infill(REQUESTS[1:2], config)[0]
    engine, _ = scripted_engine(lm, [[end]])          # row 0 ends at once, row 1 runs on
    first, second = engine.infill(REQUESTS[:2], config)
    assert first.token_ids == [] and first.stats.stop_reason == "empty"   # ended with nothing
    assert second.token_ids == alone.token_ids


def test_left_padding_positions_and_mask(models):
    # RoPE is blind to a common offset, so equal outputs alone would not show wrong positions
    lm = models["deepseek-coder"]
    engine, model = scripted_engine(lm, [])
    engine.infill(REQUESTS, GREEDY.replace(max_tokens=3))
    lengths = [len(model.positions[0][b]) - int((model.masks[0][b] == 0).sum()) for b in range(3)]
    assert len(set(lengths)) == 3                      # three prompt lengths: real padding
    width = model.input_shapes[0][1]
    for b, n in enumerate(lengths):
        assert model.masks[0][b].tolist() == [0] * (width - n) + [1] * n
        assert model.positions[0][b, width - n:].tolist() == list(range(n))
        for step in (1, 2):                            # decoding continues each row's own count
            assert model.positions[step][b].tolist() == [n - 1 + step]
            assert model.masks[step].shape == (3, width + step)
    assert model.input_shapes[1:] == [(3, 1), (3, 1)]


def test_sampling_is_seeded(models):
    engine = AREngine(models["qwen2.5-coder"])
    config = GREEDY.replace(temperature=1.0, seed=7)
    a = engine.infill(REQUESTS, config)
    b = engine.infill(REQUESTS, config)
    c = engine.infill(REQUESTS, config.replace(seed=8))
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


# --- 3. stop rules ----------------------------------------------------------------------

def test_end_token_cuts_the_middle(models):
    lm = models["starcoder2"]
    body = encode(lm, "x = 1")
    for end in lm.ids.end_of_middle:
        engine, model = scripted_engine(lm, [body + [end]])
        [r] = engine.infill([REQUESTS[0]], GREEDY)
        assert r.token_ids == body
        assert r.stats.stop_reason == "end" and r.stats.tokens == len(body)
        assert r.stats.nfe == len(body) + 1 == model.calls


def test_max_tokens_respected(models):
    lm = models["deepseek-coder"]
    config = GREEDY.replace(max_tokens=5)
    filler = encode(lm, "x")
    engine, model = scripted_engine(lm, [filler * 20] * 3)
    results = engine.infill(REQUESTS, config)
    for r in results:
        assert r.token_ids == filler * 5
        assert r.stats.stop_reason == "length" and r.stats.nfe == 5
    assert model.calls == 5             # no forward whose logits nobody uses
    for r in AREngine(lm).infill(REQUESTS, config):
        assert len(r.token_ids) <= 5


def test_loop_stops_once_every_row_is_done(models):
    lm = models["fim-tiny-ar"]
    end = lm.ids.end_of_middle[0]
    a, b = encode(lm, "a"), encode(lm, "b c")
    engine, model = scripted_engine(lm, [a + [end], b + [end], [end]])
    results = engine.infill(REQUESTS, GREEDY)
    assert [r.token_ids for r in results] == [a, b, []]
    assert model.calls == len(b) + 1
    assert results[2].text == "" and results[2].stats.stop_reason == "empty"


def test_single_line_stops_at_line_end(models):
    lm = models["codellama"]
    script = encode(lm, "x = 1\ny = 2\nz = 3\n")
    engine, model = scripted_engine(lm, [script])
    req = InfillRequest("def f():\n    ", "\n")
    [r] = engine.infill([req], GREEDY.replace(single_line=True, max_tokens=30))
    assert r.stats.stop_reason == "line"
    assert r.text == "x = 1"
    assert lm.tokenizer.decode(r.token_ids).startswith("x = 1\n")
    assert model.calls == len(r.token_ids) < len(script)
    # without single-line mode the same script runs on to the end of the script
    engine, _ = scripted_engine(lm, [script])
    [r] = engine.infill([req], GREEDY.replace(max_tokens=len(script)))
    assert r.stats.stop_reason == "length" and r.token_ids == script


def test_single_line_ignores_a_leading_newline(models):
    lm = models["fim-tiny-ar"]
    script = encode(lm, "\n    return x\n    pass\n")
    engine, _ = scripted_engine(lm, [script])
    [r] = engine.infill([InfillRequest("def f(x):", "\n")], GREEDY.replace(single_line=True, max_tokens=30))
    assert r.stats.stop_reason == "line"
    assert r.text == "\n    return x"


def test_banned_tokens_are_never_generated(models):
    lm = models["qwen2.5-coder"]
    banned = list(lm.ids.banned)
    engine, _ = scripted_engine(lm, [banned * 4])     # the script pushes banned ids hardest
    for config in (GREEDY, GREEDY.replace(temperature=1.0)):
        [r] = engine.infill([REQUESTS[0]], config)
        assert not set(r.token_ids) & set(banned)
        assert len(r.token_ids) == GREEDY.max_tokens


def test_should_stop_cancels_one_row(models):
    lm = models["fim-tiny-ar"]
    filler = encode(lm, "x")
    engine, _ = scripted_engine(lm, [filler * 20] * 3)
    seen = []

    def should_stop(running):
        seen.append(list(running))
        return {1} if len(seen) == 4 else set()     # polled before the prefill, then after each step

    results = engine.infill(REQUESTS, GREEDY.replace(max_tokens=8), should_stop)
    assert results[1].stats.cancelled and results[1].stats.stop_reason == "cancelled"
    assert results[1].token_ids == filler * 3
    for r in (results[0], results[2]):
        assert not r.stats.cancelled and r.stats.stop_reason == "length"
        assert r.token_ids == filler * 8
    assert seen[:4] == [[0, 1, 2]] * 4 and all(s == [0, 2] for s in seen[4:])


def test_should_stop_before_any_forward(models):
    lm = models["fim-tiny-ar"]
    engine, model = scripted_engine(lm, [])
    results = engine.infill(REQUESTS, GREEDY, lambda running: set(running))
    assert model.calls == 0
    for r in results:
        assert r.stats.cancelled and r.stats.stop_reason == "cancelled"
        assert r.text == "" and r.token_ids == [] and r.stats.nfe == 0


def test_postprocess_applied(models):
    lm = models["fim-tiny-ar"]
    script = encode(lm, "foo(x))")
    end = lm.ids.end_of_middle[0]
    engine, _ = scripted_engine(lm, [script + [end]])
    [r] = engine.infill([InfillRequest("print(", ")\n")], GREEDY)
    assert r.token_ids == script                      # raw ids keep the duplicate
    assert r.text == "foo(x)"


# --- 4. context budget --------------------------------------------------------------------

def test_huge_prefix_is_truncated_to_the_budget(models):
    lm = models["fim-tiny-ar"]
    config = GREEDY.replace(max_tokens=8)
    engine, model = scripted_engine(lm, [])
    prefix = (SAMPLE_CODE * (200_000 // len(SAMPLE_CODE) + 1))[:200_000]
    req = InfillRequest(prefix, "\nprint(add(1, 2))\n")
    [r] = engine.infill([req], config)
    budget = lm.context_tokens - config.max_tokens - engine.special_tokens
    assert r.stats.truncated
    # a cut prefix starts at an anchor line: at most ANCHOR_LINES lines short of the budget
    longest_line = max(len(lm.tokenizer.encode(line + "\n", add_special_tokens=False)) for line in SAMPLE_CODE.splitlines())
    assert budget - ANCHOR_LINES * longest_line - 2 <= r.stats.prompt_tokens <= budget
    prompt_len = model.input_shapes[0][1]
    assert prompt_len + config.max_tokens <= lm.context_tokens


def test_context_tokens_option_overrides_the_model_limit(models):
    lm = models["codellama"]
    engine = AREngine(lm)
    config = GREEDY.replace(max_tokens=8, context_tokens=64)
    prefix = SAMPLE_CODE * 20
    [r] = engine.infill([InfillRequest(prefix, SAMPLE_CODE)], config)
    assert r.stats.truncated
    assert r.stats.prompt_tokens <= 64 - 8 - engine.special_tokens
    [short] = engine.infill([REQUESTS[0]], config)
    assert not short.stats.truncated


def test_context_tokens_past_the_model_limit_are_capped(models):
    """A client asking for a million-token window gets the model's own (the model would
    otherwise run far past its positions and hold the worker for seconds)."""
    lm = models["codellama"]
    engine = AREngine(lm)
    prefix = SAMPLE_CODE * 400
    [huge] = engine.infill([InfillRequest(prefix, SAMPLE_CODE)], GREEDY.replace(max_tokens=8, context_tokens=1 << 20))
    [own] = engine.infill([InfillRequest(prefix, SAMPLE_CODE)], GREEDY.replace(max_tokens=8))
    assert huge.stats.truncated and huge.stats.prompt_tokens == own.stats.prompt_tokens
    assert huge.stats.prompt_tokens <= lm.context_tokens - 8 - engine.special_tokens


def test_a_middle_the_model_cannot_hold_is_refused_before_decoding(models):
    engine = AREngine(models["codellama"])
    limit = engine.lm.context_tokens
    engine.check(GREEDY.replace(max_tokens=limit - RESERVED_TOKENS))           # fits
    with pytest.raises(OptionError, match="max_tokens"):
        engine.check(GREEDY.replace(max_tokens=limit))


def test_budget_counts_the_special_tokens(models):
    with_bos = AREngine(models["deepseek-coder"])
    without = AREngine(models["qwen2.5-coder"])
    assert with_bos.special_tokens == 4 and without.special_tokens == 3


def test_warmup_and_empty_batch(models):
    engine = AREngine(models["fim-tiny-ar"])
    assert engine.warmup() > 0
    assert engine.infill([], GREEDY) == []


def test_the_checkpoint_serving_context_is_the_default_and_a_request_may_ask_for_more():
    """The bundled twins are trained on 1024-token windows and served with a shorter budget
    (config.fim_default_context_tokens) unless a request names its own context_tokens."""
    from fim_server.models.loader import bundled_path

    path = bundled_path("ar")
    default = json.loads((path / "config.json").read_text())["fim_default_context_tokens"]
    engine = AREngine(load_model(str(path), kind="ar"))
    assert engine.lm.context_tokens == 1024 and engine.lm.default_context_tokens == default < 1024
    long_prefix = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 400))
    req = InfillRequest(long_prefix, "\nprint(value_399)\n", "long")
    base = DecodeConfig(engine="ar", max_tokens=64)
    served = len(engine.start(req, base).prompt)
    asked = len(engine.start(req, base.replace(context_tokens=1024)).prompt)
    assert served <= default - 64 < asked <= 1024 - 64
    assert engine.context_limit(base.replace(max_tokens=512)) == 512 + RESERVED_TOKENS   # room for the middle
