"""Alignment op strings: validation and per-utterance counts.

An op string lists one utterance's alignment in order, one character per aligned token:
``C`` correct, ``S`` substitution, ``D`` deletion, ``I`` insertion. The reference words are
the non-``I`` ops; insertions sit between (or before/after) reference words.
"""

from __future__ import annotations

from collections.abc import Mapping

OPS = frozenset("CSDI")


def validate_ops(utterance: str, ops: object) -> str:
    """Return ``ops`` if it is a valid op string, else raise.

    Args:
        utterance: utterance id, used in the error message.
        ops: the candidate op string.

    Returns:
        ``ops`` unchanged.

    Raises:
        ValueError: ``ops`` is not a string or holds a character outside ``C/S/D/I``.
    """
    if not isinstance(ops, str):
        raise ValueError(
            f"utterance {utterance!r}: alignment ops must be a string over C/S/D/I, "
            f"got {type(ops).__name__}"
        )
    bad = sorted(set(ops) - OPS)
    if bad:
        raise ValueError(
            f"utterance {utterance!r}: alignment ops {ops!r} hold {bad}; allowed are C, S, D, I"
        )
    return ops


def ref_word_count(ops: str) -> int:
    """Number of reference words in an op string (every op but ``I``)."""
    return len(ops) - ops.count("I")


def error_count(ops: str) -> int:
    """Number of errors in an op string (``S + D + I``, every op but ``C``)."""
    return len(ops) - ops.count("C")


def counts_from_ops(ops: str) -> tuple[int, int]:
    """Per-utterance ``(errors, ref_words)`` from an op string.

    Args:
        ops: op string over ``C/S/D/I``.

    Returns:
        ``(S + D + I, C + S + D)``, the row format that :func:`wer_from_counts` and
        :func:`bootstrap_wer_diff` take.

    Raises:
        ValueError: ``ops`` holds a character outside ``C/S/D/I``.
    """
    validate_ops("<ops>", ops)
    return error_count(ops), ref_word_count(ops)


def check_same_ids(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    """Return the shared utterance ids, sorted, or raise if the two id sets differ.

    Raises:
        ValueError: either mapping is empty, or an id is in one system but not the other.
    """
    if not a or not b:
        raise ValueError("no utterances: both systems need at least one utterance")
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(
            "the two systems must be scored on the same utterances: "
            f"only in A: {only_a[:5]}{' ...' if len(only_a) > 5 else ''}, "
            f"only in B: {only_b[:5]}{' ...' if len(only_b) > 5 else ''}"
        )
    return sorted(a)
