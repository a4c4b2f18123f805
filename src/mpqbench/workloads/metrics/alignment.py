"""Word alignments: minimum-edit-distance under unit costs or under sclite's costs.

Two weightings are offered, named by :data:`ALIGNMENTS`:

- ``"unit"`` (the default): substitution, insertion and deletion all cost 1, so the
  alignment minimises the number of errors S + D + I. Computed by jiwer (rapidfuzz's
  Levenshtein), whose tie-breaking decides the S/D/I split among equally short
  alignments.
- ``"sclite"``: NIST SCTK sclite's word costs (``wwd_WORD`` in ``src/sclite/word.c``):
  correct 0, substitution 4, insertion 3, deletion 3, with sclite's tie-breaking
  (``calculate_internal_cells`` in ``src/sclite/net_dp.c``): at each cell the diagonal
  move (correct or substitution) wins when its cost is ``<=`` both others, then deletion
  when strictly cheaper than insertion, else insertion. The back-trace starts at the
  last reference and hypothesis words. Since a substitution costs less than an
  insertion plus a deletion but more than either alone, sclite can prefer an alignment
  with *more* errors but fewer substitutions (e.g. five substitutions, cost 20, lose to
  three deletions, two correct words and three insertions, cost 18), so the two
  weightings can differ in the error total as well as in its split.

sclite's special words are not modelled: ``@`` (its null word, costs 0.001 / 1),
optionally deletable ``(word)`` (cost 2) and fragments ``word-``. The Whisper English
normaliser that mpqbench applies to both sides removes parenthesised text and replaces
hyphens and ``@`` with spaces, so those cannot occur in normalised text.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer

#: The alignment weightings :func:`align` accepts.
ALIGNMENTS: tuple[str, ...] = ("unit", "sclite")
#: The default weighting (what every record made before the option existed used).
DEFAULT_ALIGNMENT = "unit"

#: sclite's word costs (``wwd_WORD``): substitution, insertion, deletion.
SCLITE_SUB, SCLITE_INS, SCLITE_DEL = 4, 3, 3

_JIWER_OPS = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


def check_alignment(alignment: object) -> str:
    """Return ``alignment`` if it names a weighting of :data:`ALIGNMENTS`, else raise.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    return str(alignment)


def align_unit(ref_words: Sequence[str], hyp_words: Sequence[str]) -> str:
    """Unit-cost (Levenshtein) word alignment as a ``C S D I`` string, via jiwer."""
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    ops = []
    for chunk in out.alignments[0]:
        ref_len = chunk.ref_end_idx - chunk.ref_start_idx
        width = max(ref_len, chunk.hyp_end_idx - chunk.hyp_start_idx)
        ops.append(_JIWER_OPS[chunk.type] * width)
    return "".join(ops)


def align_sclite(ref_words: Sequence[str], hyp_words: Sequence[str]) -> str:
    """sclite's word alignment (costs 0/4/3/3 and its tie-breaking) as a ``C S D I`` string.

    A port of the linear-network case of SCTK's ``Network_dpalign`` (see the module
    docstring for the rules); words are equal when their strings are equal.
    """
    n, m = len(ref_words), len(hyp_words)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    move = [[""] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        cost[0][j], move[0][j] = cost[0][j - 1] + SCLITE_INS, "I"
    for i in range(1, n + 1):
        cost[i][0], move[i][0] = cost[i - 1][0] + SCLITE_DEL, "D"
    for i in range(1, n + 1):
        row, above = cost[i], cost[i - 1]
        ref = ref_words[i - 1]
        for j in range(1, m + 1):
            same = ref == hyp_words[j - 1]
            sub = above[j - 1] + (0 if same else SCLITE_SUB)
            dele = above[j] + SCLITE_DEL
            ins = row[j - 1] + SCLITE_INS
            if sub <= dele and sub <= ins:
                row[j], move[i][j] = sub, "C" if same else "S"
            elif dele < ins:
                row[j], move[i][j] = dele, "D"
            else:
                row[j], move[i][j] = ins, "I"
    ops = []
    i, j = n, m
    while i > 0 or j > 0:
        op = move[i][j]
        ops.append(op)
        if op in "CS":
            i, j = i - 1, j - 1
        elif op == "D":
            i -= 1
        else:
            j -= 1
    return "".join(reversed(ops))


def align(ref_words: Sequence[str], hyp_words: Sequence[str], alignment: str) -> str:
    """Align with the named weighting (``"unit"`` or ``"sclite"``).

    Raises:
        ValueError: an unknown ``alignment``.
    """
    if check_alignment(alignment) == "sclite":
        return align_sclite(ref_words, hyp_words)
    return align_unit(ref_words, hyp_words)


__all__ = [
    "ALIGNMENTS",
    "DEFAULT_ALIGNMENT",
    "SCLITE_DEL",
    "SCLITE_INS",
    "SCLITE_SUB",
    "align",
    "align_sclite",
    "align_unit",
    "check_alignment",
]
