"""Shared pieces of the bad-input fuzz tests (issue 6, item 4).

Every fuzz case must end in success with a correct result, or in a plain ``ValueError`` /
``FileNotFoundError`` whose message names the input (file path or field). A library's own
exception (``UnicodeDecodeError``, ``json.JSONDecodeError``, ``tomllib.TOMLDecodeError``,
``soundfile.LibsndfileError``, ``struct.error``, ``RecursionError``...) escaping is a failure,
even where it subclasses ``ValueError``: those name the library's problem, not the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: 1,000 reproducible cases per input kind (derandomized: the same cases in every run).
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)

#: Project error types a bad input may end in.
CLEAR_ERRORS = (ValueError, FileNotFoundError)


@contextlib.contextmanager
def clear_error_or_success(*names: str) -> Iterator[list[BaseException]]:
    """Allow success, or a plain ValueError/FileNotFoundError naming one of ``names``.

    Yields a list that holds the caught error (empty on success), so the caller can check
    the success result only when there was one.
    """
    caught: list[BaseException] = []
    try:
        yield caught
    except CLEAR_ERRORS as exc:
        assert type(exc) in CLEAR_ERRORS, (
            f"a library error leaked: {type(exc).__module__}.{type(exc).__name__}: {exc}"
        )
        message = str(exc)
        assert any(name in message for name in names), (
            f"error does not name the input {names}: {message!r}"
        )
        caught.append(exc)


def json_scalars() -> st.SearchStrategy:
    """JSON/TOML-ish scalars with the awkward cases: huge ints, NaN, inf, bools, unicode."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.sampled_from([0, -1, 1, 8, 9, 32, 2**31, 2**63, -(2**63), 10**30]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([4.0, 8.5, float("nan"), float("inf")]),
        st.text(max_size=12),
        st.sampled_from(["", "4", "none", "\x00", "\ud7ff\u2028", "é" * 3]),
    )


def json_values(max_leaves: int = 8) -> st.SearchStrategy:
    """Arbitrary nested JSON-like values built from :func:`json_scalars`."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=6), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def damaged_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """Ways to damage a valid file: truncate, flip bytes, splice random bytes, re-encode."""
    n = len(valid)

    @st.composite
    def _damage(draw: st.DrawFn) -> bytes:
        how = draw(st.sampled_from(["truncate", "flip", "splice", "random", "prefix", "encode"]))
        if how == "truncate":
            return valid[: draw(st.integers(0, max(n - 1, 0)))]
        if how == "flip":
            data = bytearray(valid)
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, max(n - 1, 0)))
                if data:
                    data[i] = draw(st.integers(0, 255))
            return bytes(data)
        if how == "splice":
            i = draw(st.integers(0, n))
            return valid[:i] + draw(st.binary(max_size=64)) + valid[i:]
        if how == "prefix":
            return draw(st.binary(min_size=1, max_size=16)) + valid
        if how == "encode":
            text = valid.decode("utf-8", errors="replace")
            encoding = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
            return text.encode(encoding, errors="replace")
        return draw(st.binary(max_size=256))

    return _damage()
