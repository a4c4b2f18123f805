"""Word error rate from per-utterance counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["wer_from_counts"]

Row = tuple[int, int]


def _check_row(name: str, row: object) -> Row:
    if not (isinstance(row, (tuple, list)) and len(row) == 2):
        raise ValueError(f"utterance {name}: expected (errors, ref_words), got {row!r}")
    errors, ref = row
    for label, value in (("errors", errors), ("ref_words", ref)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"utterance {name}: {label} must be a non-negative integer, got {value!r}"
            )
    return errors, ref


def check_rows(rows: Mapping[str, Row] | Iterable[Row]) -> list[tuple[str, Row]]:
    """Validate rows and return ``(name, (errors, ref_words))`` pairs in input order.

    Raises:
        ValueError: a row is not a pair of non-negative integers.
    """
    items = rows.items() if isinstance(rows, Mapping) else enumerate(rows)
    return [(str(k), _check_row(repr(k), v)) for k, v in items]


def wer_from_counts(rows: Mapping[str, Row] | Iterable[Row]) -> float:
    """Corpus WER: total errors over total reference words (a fraction, not a percentage).

    Args:
        rows: per-utterance ``(errors, ref_words)`` with ``errors = S + D + I`` and
            ``ref_words = C + S + D``, as a mapping id -> row or an iterable of rows.

    Returns:
        ``sum(errors) / sum(ref_words)``; may exceed 1 with many insertions.

    Raises:
        ValueError: no rows, a malformed row, or zero reference words in total.
    """
    checked = check_rows(rows)
    if not checked:
        raise ValueError("wer_from_counts: no utterances")
    errors = sum(r[0] for _, r in checked)
    ref = sum(r[1] for _, r in checked)
    if ref == 0:
        raise ValueError(
            f"wer_from_counts: {len(checked)} utterances hold 0 reference words; WER undefined"
        )
    return errors / ref
