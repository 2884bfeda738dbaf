"""JSON for the wire, on both backends: orjson (when installed) and the standard library.

What matters is what a frontend receives: strict JSON (no NaN tokens), UTF-8, string keys, and
the same text whichever backend wrote it.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trikernel.protocol import jsonutil

HAS_ORJSON = jsonutil.dumps is not jsonutil._std_dumps


class Backend(NamedTuple):
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes | str], Any]


BACKENDS = [
    pytest.param(Backend(jsonutil.dumps, jsonutil.loads), id="orjson" if HAS_ORJSON else "default"),
    pytest.param(Backend(jsonutil._std_dumps, jsonutil._std_loads), id="stdlib"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


def strict_parse(data: bytes) -> Any:
    """Parse as a JavaScript frontend would: UTF-8 only, no NaN or Infinity tokens."""

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(data.decode("utf-8"), parse_constant=reject)


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# -- dumps ------------------------------------------------------------------------------------


def test_dumps_returns_utf8_bytes(backend: Backend) -> None:
    out = backend.dumps({"text": "héllo 🙂 ✓", "n": 1})
    assert isinstance(out, bytes)
    assert strict_parse(out) == {"text": "héllo 🙂 ✓", "n": 1}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ([1.5, math.nan, math.inf, -math.inf], [1.5, None, None, None]),
        ({"a": math.nan, "b": {"c": [math.inf]}}, {"a": None, "b": {"c": [None]}}),
    ],
)
def test_nan_and_infinity_become_null(backend: Backend, value: object, expected: object) -> None:
    assert strict_parse(backend.dumps(value)) == expected


@pytest.mark.parametrize(
    "value",
    [10**30, -(10**30), 2**64, -(2**63) - 1, 10**300],
    ids=["1e30", "-1e30", "2**64", "-2**63-1", "1e300"],
)
def test_integers_wider_than_64_bits_are_written_exactly(backend: Backend, value: int) -> None:
    assert backend.dumps(value) == str(value).encode("ascii")
    assert json.loads(backend.dumps({"n": [value]})) == {"n": [value]}


def test_stdlib_reads_wide_integers_back_exactly() -> None:
    assert jsonutil._std_loads(jsonutil.dumps(10**30)) == 10**30
    assert jsonutil._std_loads(b"-1" + b"0" * 40) == -(10**40)


@pytest.mark.skipif(not HAS_ORJSON, reason="orjson is not installed")
def test_orjson_reads_integers_wider_than_64_bits_as_floats() -> None:
    # Documented trade-off (module docstring): the fast parser stays, and wide integers lose
    # precision on the way in. 64-bit values, signed or unsigned, stay exact.
    assert jsonutil.loads(str(2**64 - 1)) == 2**64 - 1
    assert jsonutil.loads(str(-(2**63))) == -(2**63)
    wide = jsonutil.loads(jsonutil.dumps(10**30))
    assert isinstance(wide, float)
    assert wide == 1e30
    assert isinstance(jsonutil.loads(str(2**64)), float)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1: "a", 2: "b"}, {"1": "a", "2": "b"}),
        ({1.5: "a", -0.25: "b"}, {"1.5": "a", "-0.25": "b"}),
        ({None: "a"}, {"null": "a"}),
        ({True: "a", False: "b"}, {"true": "a", "false": "b"}),
        ({(1, 2): "a"}, {"(1, 2)": "a"}),
        ({"s": {7: [{None: 1}]}}, {"s": {"7": [{"null": 1}]}}),
        ({1: math.nan, "x": 2}, {"1": None, "x": 2}),
    ],
    ids=["int", "float", "none", "bool", "tuple", "nested", "with-nan"],
)
def test_non_string_keys_become_strings(
    backend: Backend, value: dict[Any, Any], expected: dict[str, Any]
) -> None:
    assert strict_parse(backend.dumps(value)) == expected


UTC = datetime.timezone.utc
INDIA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=INDIA),
        # Naive datetimes exist in user data; they are written without an offset.
        datetime.datetime(2024, 1, 2, 3, 4, 5),  # noqa: DTZ001
        datetime.date(2024, 2, 29),
        datetime.time(23, 59, 58, 7),
    ],
    ids=lambda v: type(v).__name__,
)
def test_dates_and_times_become_iso_8601(
    backend: Backend, value: datetime.date | datetime.time
) -> None:
    assert strict_parse(backend.dumps({"when": value})) == {"when": value.isoformat()}


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff\xfe binary", bytearray(b"array"), memoryview(b"view")],
    ids=["empty", "bytes", "bytearray", "memoryview"],
)
def test_bytes_become_base64(backend: Backend, value: bytes | bytearray | memoryview) -> None:
    encoded = strict_parse(backend.dumps({"data": value}))["data"]
    assert base64.b64decode(encoded) == bytes(value)


def test_sets_and_tuples_become_lists(backend: Backend) -> None:
    out = strict_parse(backend.dumps({"t": (1, (2, 3)), "s": {3, 1, 2}, "f": frozenset({"x"})}))
    assert out["t"] == [1, [2, 3]]
    assert sorted(out["s"]) == [1, 2, 3]
    assert out["f"] == ["x"]


def test_numpy_arrays_and_scalars_become_lists_and_numbers(backend: Backend) -> None:
    np = pytest.importorskip("numpy")
    value = {
        "ints": np.arange(3),
        "floats": np.array([1.5, np.nan, np.inf]),
        "matrix": np.arange(6).reshape(2, 3),
        "transposed": np.arange(6).reshape(2, 3).T,  # not C-contiguous
        "bools": np.array([True, False]),
        "strings": np.array(["a", "b"]),
        "int64": np.int64(-7),
        "uint64": np.uint64(2**64 - 1),
        "float32": np.float32(1.5),
        "float64_nan": np.float64("nan"),
        "bool_": np.bool_(True),
    }
    assert strict_parse(backend.dumps(value)) == {
        "ints": [0, 1, 2],
        "floats": [1.5, None, None],
        "matrix": [[0, 1, 2], [3, 4, 5]],
        "transposed": [[0, 3], [1, 4], [2, 5]],
        "bools": [True, False],
        "strings": ["a", "b"],
        "int64": -7,
        "uint64": 2**64 - 1,
        "float32": 1.5,
        "float64_nan": None,
        "bool_": True,
    }


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), {"a": Opaque()}, [1, {"b": [Opaque()]}], {"nan": math.nan, "x": Opaque()}],
    ids=["bare", "in-dict", "nested", "with-nan"],
)
def test_an_object_without_a_rule_is_a_type_error(backend: Backend, value: object) -> None:
    with pytest.raises(TypeError, match="Opaque"):
        backend.dumps(value)


@pytest.mark.parametrize(
    "value",
    ["\ud800", "a\udfffb", {"k\ud83d": "v"}, ["ok", "\udc00"]],
    ids=["high", "low", "in-key", "in-list"],
)
def test_lone_surrogates_do_not_crash_and_read_back(backend: Backend, value: object) -> None:
    assert backend.loads(backend.dumps(value)) == value


def test_lone_surrogates_are_written_as_valid_utf8(backend: Backend) -> None:
    out = backend.dumps({"text": "a\ud800b"})
    out.decode("utf-8")


def test_depth_the_fast_path_refuses_is_still_written(backend: Backend) -> None:
    # orjson stops at 255 levels; the stdlib fallback writes deeper values.
    value = nested_list(400)
    assert backend.loads(backend.dumps(value)) == value


def test_too_deep_to_write_is_a_value_error(backend: Backend) -> None:
    with pytest.raises(ValueError, match="nested"):
        backend.dumps({"data": nested_list(100_000)})


# -- loads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": [1, 2.5, null, true, "x"]}', {"a": [1, 2.5, None, True, "x"]}),
        ('{"a": "é"}', {"a": "é"}),
        (b'  {"a": 1}\n', {"a": 1}),
        (b'"\\u00e9\\ud83d\\ude42"', "é🙂"),
        (b"[]", []),
    ],
    ids=["bytes", "str", "whitespace", "escapes", "array"],
)
def test_loads_reads_json_documents(backend: Backend, data: bytes | str, expected: Any) -> None:
    assert backend.loads(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"[1,]",
        b"{'a': 1}",
        b'{"a": 1} {"b": 2}',
        b"nul",
        b"\xff",
        b'"\xc3"',
        b'"\x00"',
        b"1" * 5000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        "[1,",
    ],
    ids=[
        "empty",
        "blank",
        "unclosed",
        "trailing-comma",
        "single-quotes",
        "two-documents",
        "truncated-null",
        "bad-utf8",
        "truncated-utf8",
        "control-char",
        "5000-digits",
        "deep-lists",
        "deep-objects",
        "text",
    ],
)
def test_loads_raises_value_error_for_invalid_documents(
    backend: Backend, data: bytes | str
) -> None:
    with pytest.raises(ValueError):
        backend.loads(data)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(st.binary(max_size=60), st.text(max_size=60)))
def test_loads_raises_nothing_but_value_error(data: bytes | str) -> None:
    for loads in (jsonutil.loads, jsonutil._std_loads):
        try:
            loads(data)
        except ValueError:
            pass


# -- the two backends agree --------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.datetimes(timezones=st.sampled_from([UTC, INDIA])),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=4),
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_both_backends_write_the_same_json(value: object) -> None:
    fast, std = jsonutil.dumps(value), jsonutil._std_dumps(value)
    assert strict_parse(fast) == strict_parse(std)
