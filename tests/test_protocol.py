"""Wire protocol: round trips, malformed frames, fuzzing, request_config."""

import random
import sys

import msgpack
import pytest

from fim_server.wire import protocol as P
from fim_server.wire.options import DecodeConfig
from fim_server.wire.protocol import (
    CancelMsg, ErrorCode, ErrorMsg, HealthMsg, InfillMsg, ProtocolError, CloseMsg,
    ResponseMsg, StatsMsg, decode, encode, error_from, request_config,
)

ALL_MESSAGES = [
    InfillMsg(id="r1", prefix="def add(a, b):\n    ", suffix="\n", doc_key="file:///a.py",
              options={"threshold": 0.8, "cache": "prefix", "block_size": 16},
              max_tokens=32, single_line=True, timeout_ms=1500.0, engine="ar"),
    InfillMsg(id="r2", prefix="", suffix=""),
    InfillMsg(id="ü-🙂", prefix="αβγ 🙂", suffix="\x00end"),
    ResponseMsg(id="r1", text="return a + b", stats={"steps": 3, "ms": 12.5, "per_block": [1, 2],
                                                     "nested": {"a": None, "b": True}}),
    ResponseMsg(id="r1", text="", cancelled=True),
    ErrorMsg(id="r1", code=ErrorCode.busy, message="queue full", retryable=True),
    ErrorMsg(id=None, code=ErrorCode.bad_request, message="frame is not valid msgpack"),
    CancelMsg(id="r1"),
    CancelMsg(doc_key="file:///a.py"),
    CancelMsg(id="r1", doc_key="file:///a.py"),
    HealthMsg(id="h1"),
    StatsMsg(id="h1", stats={"requests": 10, "queue": 0, "engine": "diffusion"}),
    StatsMsg(id="h2"),
    CloseMsg(doc_key="file:///a.py"),
]


def frame(**fields):
    return msgpack.packb(fields, use_bin_type=True)


def infill_fields(**over):
    fields = {"v": 1, "t": "infill", "id": "r9", "prefix": "a", "suffix": "b"}
    fields.update(over)
    return fields


def expect(data, code, id=None):
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.code is code, info.value
    assert info.value.id == id
    return info.value


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = encode(msg)
    assert isinstance(data, bytes)
    back = decode(data)
    assert type(back) is type(msg)
    assert back == msg


def test_envelope_fields():
    obj = msgpack.unpackb(encode(HealthMsg(id="h")))
    assert obj == {"v": P.PROTOCOL_VERSION, "t": "health", "id": "h"}


def test_every_type_covered():
    assert {P._TYPE_OF_CLASS[type(m)] for m in ALL_MESSAGES} == set(P.MsgType)


def test_decode_accepts_buffers():
    data = encode(HealthMsg(id="h"))
    assert decode(bytearray(data)) == HealthMsg(id="h")
    assert decode(memoryview(data)) == HealthMsg(id="h")


def test_optional_fields_may_be_missing_or_nil():
    msg = decode(frame(**infill_fields(doc_key=None, max_tokens=None, engine=None)))
    assert msg == InfillMsg(id="r9", prefix="a", suffix="b")
    assert decode(frame(v=1, t="response", id="x", text="t")) == ResponseMsg(id="x", text="t")


def test_int_accepted_for_float_field():
    msg = decode(frame(**infill_fields(timeout_ms=1500)))
    assert msg.timeout_ms == 1500.0 and isinstance(msg.timeout_ms, float)


def test_unknown_extra_fields_are_ignored():
    msg = decode(frame(**infill_fields(future_field=[1, 2, 3], another={"x": 1})))
    assert msg == InfillMsg(id="r9", prefix="a", suffix="b")


# ---------------------------------------------------------------- malformed frames


def test_not_bytes():
    expect("a string", ErrorCode.bad_request)
    expect(None, ErrorCode.bad_request)
    expect(12, ErrorCode.bad_request)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x85\xa1v", b"\xff" * 7, b"\x92\x01",
                                  b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"])
def test_garbage_and_truncated(data):
    expect(data, ErrorCode.bad_request)


def test_extra_bytes_after_frame():
    expect(encode(HealthMsg(id="h")) + b"\x00", ErrorCode.bad_request)


@pytest.mark.parametrize("top", [1, "infill", [1, "infill"], None, 2.5, b"raw"])
def test_top_level_not_a_map(top):
    expect(msgpack.packb(top, use_bin_type=True), ErrorCode.bad_request)


def test_non_string_map_keys():
    expect(msgpack.packb({1: 2}), ErrorCode.bad_request)


def test_invalid_utf8():
    # fixstr of length 2 holding bytes that are not UTF-8
    expect(b"\x81\xa1v\xa2\xff\xfe", ErrorCode.bad_request)


def test_ext_types_refused():
    data = msgpack.packb({"v": 1, "t": "stats", "id": "s", "stats": {"x": msgpack.ExtType(5, b"abcd")}})
    expect(data, ErrorCode.bad_request)


@pytest.mark.parametrize("version", [None, 0, 2, "1", 1.0, True, [1]])
def test_bad_version(version):
    fields = infill_fields(v=version)
    if version is None:
        del fields["v"]
    expect(frame(**fields), ErrorCode.bad_version, id="r9")


def test_bad_version_without_id():
    expect(frame(v=99, t="ready"), ErrorCode.bad_version, id=None)


@pytest.mark.parametrize("t", [None, "shutdown", "", 3, ["infill"], {"a": 1}])
def test_unknown_type(t):
    fields = infill_fields(t=t)
    if t is None:
        del fields["t"]
    expect(frame(**fields), ErrorCode.bad_request, id="r9")


@pytest.mark.parametrize("name", ["prefix", "suffix"])
def test_missing_required_field(name):
    fields = infill_fields()
    del fields[name]
    err = expect(frame(**fields), ErrorCode.bad_request, id="r9")
    assert name in err.message


def test_missing_id():
    fields = infill_fields()
    del fields["id"]
    expect(frame(**fields), ErrorCode.bad_request, id=None)


def test_unusable_ids_are_not_recovered():
    expect(frame(**infill_fields(id=7)), ErrorCode.bad_request, id=None)
    expect(frame(**infill_fields(id="")), ErrorCode.bad_request, id=None)
    expect(frame(**infill_fields(id="x" * (P.MAX_ID_CHARS + 1))), ErrorCode.too_large, id=None)


def test_cancel_needs_id_or_doc_key():
    expect(frame(v=1, t="cancel"), ErrorCode.bad_request)
    expect(frame(v=1, t="cancel", id=None, doc_key=None), ErrorCode.bad_request)


@pytest.mark.parametrize("field,value", [
    ("prefix", 5),
    ("suffix", None),
    ("prefix", b"bytes"),
    ("doc_key", 3),
    ("doc_key", ""),
    ("options", [1, 2]),
    ("options", "threshold=0.5"),
    ("options", {"threshold": [0.5]}),
    ("options", {"threshold": None}),
    ("options", {"": 1}),
    ("max_tokens", True),
    ("max_tokens", 3.5),
    ("max_tokens", "32"),
    ("single_line", 1),
    ("single_line", "yes"),
    ("timeout_ms", True),
    ("timeout_ms", "soon"),
    ("timeout_ms", float("nan")),
    ("timeout_ms", float("inf")),
    ("engine", 1),
])
def test_wrong_field_types(field, value):
    err = expect(frame(**infill_fields(**{field: value})), ErrorCode.bad_request, id="r9")
    assert repr(field) in err.message or "option" in err.message


@pytest.mark.parametrize("fields", [
    {"t": "response", "id": "r9", "text": "x", "cancelled": 0},
    {"t": "response", "id": "r9", "text": "x", "stats": [1]},
    {"t": "response", "id": "r9", "text": "x", "stats": {"a": {b"k": 2}}},
    {"t": "response", "id": "r9", "text": "x", "stats": {"a": b"raw"}},
    {"t": "error", "id": "r9", "code": "on_fire", "message": "x"},
    {"t": "error", "id": "r9", "code": "busy", "message": "x", "retryable": "yes"},
    {"t": "error", "id": "r9", "code": "busy"},
    {"t": "stats", "id": "r9", "stats": "ok"},
    {"t": "ready", "id": "r9", "device": "cpu", "engine": "ar", "warmup_ms": 1.0},
    {"t": "ready", "id": "r9", "model": "m", "device": "cpu", "engine": "ar", "warmup_ms": True},
])
def test_wrong_field_types_other_messages(fields):
    expect(frame(v=1, **fields), ErrorCode.bad_request, id="r9")


def test_stats_nesting_limit():
    deep = 1
    for _ in range(P.MAX_STATS_DEPTH + 2):
        deep = [deep]
    expect(frame(v=1, t="stats", id="s", stats={"d": deep}), ErrorCode.bad_request, id="s")
    # far deeper than msgpack's own stack: still a ProtocolError
    expect(b"\x81\xa1v" + b"\x91" * 5000 + b"\x01", ErrorCode.bad_request)


def test_oversized_frame_checked_before_unpacking():
    data = b"\xc1" * (P.MAX_FRAME_BYTES + 1)   # not even msgpack: size wins
    expect(data, ErrorCode.too_large)


@pytest.mark.parametrize("field,size", [
    ("prefix", P.MAX_TEXT_CHARS + 1),
    ("suffix", P.MAX_TEXT_CHARS + 1),
    ("doc_key", P.MAX_KEY_CHARS + 1),
    ("engine", P.MAX_ID_CHARS + 1),
])
def test_oversized_fields(field, size):
    err = expect(frame(**infill_fields(**{field: "x" * size})), ErrorCode.too_large, id="r9")
    assert field in err.message


def test_too_many_options():
    options = {f"o{i}": i for i in range(P.MAX_OPTIONS + 1)}
    expect(frame(**infill_fields(options=options)), ErrorCode.too_large, id="r9")


def test_huge_container_headers_do_not_allocate():
    # map/array headers claiming 2**32-1 entries in a tiny frame
    expect(b"\x81\xa1v\xdd\xff\xff\xff\xff", ErrorCode.bad_request)
    expect(b"\xdf\xff\xff\xff\xff", ErrorCode.bad_request)
    expect(b"\xdb\xff\xff\xff\xff", ErrorCode.bad_request)   # str32 header


# ---------------------------------------------------------------- encode


def test_encode_refuses_non_messages():
    with pytest.raises(TypeError):
        encode({"v": 1, "t": "health", "id": "h"})


def test_encode_checks_fields_and_limits():
    with pytest.raises(ProtocolError) as info:
        encode(InfillMsg(id="r", prefix=3, suffix=""))
    assert info.value.code is ErrorCode.bad_request and info.value.id == "r"
    with pytest.raises(ProtocolError) as info:
        encode(InfillMsg(id="r", prefix="x" * (P.MAX_TEXT_CHARS + 1), suffix=""))
    assert info.value.code is ErrorCode.too_large and info.value.id == "r"
    # each text within its own limit, but four bytes a char: the frame is too big
    big = "🙂" * (P.MAX_FRAME_BYTES // 8 + 10)
    assert len(big) <= P.MAX_TEXT_CHARS
    with pytest.raises(ProtocolError) as info:
        encode(InfillMsg(id="r", prefix=big, suffix=big))
    assert info.value.code is ErrorCode.too_large and info.value.id == "r"
    with pytest.raises(ProtocolError):
        encode(CancelMsg())


# ---------------------------------------------------------------- fuzzing


def _check_decode_only_protocol_errors(data):
    try:
        decode(data)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.id is None or isinstance(exc.id, str)
    # any other exception propagates and fails the test


def test_fuzz_random_bytes():
    rng = random.Random(1234)
    for _ in range(3000):
        n = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 256])
        _check_decode_only_protocol_errors(bytes(rng.getrandbits(8) for _ in range(n)))


def test_fuzz_truncated_and_mutated_frames():
    rng = random.Random(5678)
    frames = [encode(m) for m in ALL_MESSAGES]
    for _ in range(3000):
        data = bytearray(rng.choice(frames))
        action = rng.random()
        if action < 0.4:
            data = data[:rng.randrange(len(data))]
        elif action < 0.8:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        else:
            cut = rng.randrange(len(data))
            data = data[:cut] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8))) + data[cut:]
        _check_decode_only_protocol_errors(bytes(data))


def test_fuzz_random_field_values():
    rng = random.Random(91011)
    values = [None, True, False, 0, -1, 2**63, 1.5, float("nan"), "", "x", "x" * 300, b"b",
              [], [1, "a"], {}, {"a": 1}, {"threshold": 0.5}, {"x": [[[[[[[[[[1]]]]]]]]]]}]
    for _ in range(2000):
        t = rng.choice([t.value for t in P.MsgType])
        cls, spec = P._SPECS[P.MsgType(t)]
        fields = {"v": 1, "t": t}
        for name in spec:
            if rng.random() < 0.85:
                fields[name] = rng.choice(values)
        _check_decode_only_protocol_errors(msgpack.packb(fields, use_bin_type=True))


# ---------------------------------------------------------------- request_config


BASE = DecodeConfig()


def test_request_config_defaults():
    assert request_config(InfillMsg(id="r", prefix="", suffix=""), BASE) == BASE


def test_request_config_overrides():
    msg = InfillMsg(id="r", prefix="", suffix="", max_tokens=20, single_line=True, engine="ar",
                    options={"threshold": 0.5, "cache": "prefix", "temperature": 1, "seed": 7})
    cfg = request_config(msg, BASE)
    assert cfg == BASE.replace(max_tokens=20, single_line=True, engine="ar", threshold=0.5,
                               cache="prefix", temperature=1.0, seed=7)
    assert isinstance(cfg.temperature, float)


def test_request_config_speculative_and_new_decoding_options():
    msg = InfillMsg(id="r", prefix="", suffix="", engine="speculative",
                    options={"draft_length": 6, "draft_steps": 3, "unmask": "eb", "eb_gamma": 1,
                             "early_commit": 0.25})
    cfg = request_config(msg, BASE)
    assert cfg == BASE.replace(engine="speculative", draft_length=6, draft_steps=3, unmask="eb",
                               eb_gamma=1.0, early_commit=0.25)
    assert isinstance(cfg.eb_gamma, float)


def test_request_config_explicit_fields_win_over_options():
    msg = InfillMsg(id="r", prefix="", suffix="", max_tokens=20, options={"max_tokens": 99})
    assert request_config(msg, BASE).max_tokens == 20


def test_request_config_after_decode():
    msg = decode(frame(**infill_fields(options={"block_size": 8}, max_tokens=16)))
    cfg = request_config(msg, BASE)
    assert (cfg.block_size, cfg.max_tokens) == (8, 16)


def _config_error(**kw):
    msg = InfillMsg(id="r", prefix="", suffix="", **kw)
    with pytest.raises(ProtocolError) as info:
        request_config(msg, BASE)
    assert info.value.code is ErrorCode.bad_request
    assert info.value.id == "r"
    return info.value.message


def test_request_config_refuses_a_context_that_cannot_hold_the_middle():
    """context_tokens=1 with max_tokens=8 passed every single check and then failed inside the
    engine with `internal`: the combination is checked at the boundary."""
    message = _config_error(options={"context_tokens": 1}, max_tokens=8)
    assert "context_tokens" in message and "max_tokens" in message
    assert request_config(InfillMsg(id="r", prefix="", suffix="", max_tokens=8,
                                    options={"context_tokens": 16}), BASE).context_tokens == 16


def test_request_config_unknown_option():
    assert "bogus" in _config_error(options={"bogus": 1})


@pytest.mark.parametrize("options,name", [
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"cache": "sometimes"}, "cache"),
    ({"block_size": 0}, "block_size"),
    ({"block_size": 2.0}, "block_size"),
    ({"block_size": True}, "block_size"),
    ({"single_line": 1}, "single_line"),
    ({"temperature": "hot"}, "temperature"),
    ({"engine": 3}, "engine"),
    ({"draft_length": 0}, "draft_length"),
    ({"draft_length": 2.5}, "draft_length"),
    ({"draft_steps": True}, "draft_steps"),
    ({"early_commit": 1.5}, "early_commit"),
    ({"eb_gamma": -0.1}, "eb_gamma"),
    ({"unmask": "entropy"}, "unmask"),
])
def test_request_config_bad_value(options, name):
    assert name in _config_error(options=options)


def test_request_config_bad_explicit_fields():
    assert "max_tokens" in _config_error(max_tokens=0)
    assert "max_tokens" in _config_error(max_tokens=100_000)
    assert "engine" in _config_error(engine="transformer")


# ---------------------------------------------------------------- error_from


def test_error_from():
    exc = ProtocolError(ErrorCode.too_large, "prefix too long", "r1")
    assert error_from(exc) == ErrorMsg(id="r1", code=ErrorCode.too_large,
                                       message="prefix too long", retryable=False)
    assert error_from(exc, "other").id == "other"
    assert error_from(ProtocolError(ErrorCode.busy, "full")).retryable is True
    assert decode(encode(error_from(exc))) == error_from(exc)


def test_error_from_every_decode_failure_encodes():
    for data in [b"", b"\xc1", frame(**infill_fields(v=2)), frame(**infill_fields(prefix=1))]:
        with pytest.raises(ProtocolError) as info:
            decode(data)
        reply = decode(encode(error_from(info.value)))
        assert reply.code is info.value.code


def test_no_heavy_imports():
    import subprocess
    code = "import sys, fim_server.wire.protocol; assert 'zmq' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
