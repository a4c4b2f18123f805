"""Check the embedded corpus sentence files against the rules in README.md.

Run ``python scripts/corpus_text/check_text.py [DIR]`` (DIR defaults to this file's folder).
Every mechanically checkable rule is verified: sentence counts per split, 5 to 25 words,
allowed characters, capital start and final punctuation, abbreviations, no duplicates and
no two sentences sharing their first five words (within and across splits). The measured
proportions of length bins, sentences with spoken numbers and sentences with names are
printed per split and overall, and the overall proportions must lie in loose bands around
the targets. Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EXPECTED_COUNTS: dict[str, int] = {
    "train": 440,
    "dev": 100,
    "test-clean": 230,
    "test-other": 230,
}
MIN_WORDS = 5
MAX_WORDS = 25
PREFIX_WORDS = 5
ALLOWED_CHARS = re.compile(r"^[A-Za-z .,;:'?!-]+$")
ABBREVIATIONS = frozenset({"Mr.", "Mrs.", "Dr.", "St."})
TITLES = frozenset({"Mr", "Mrs", "Dr", "St"})

# Length bins (inclusive word ranges) and the overall band each bin's share must lie in.
LENGTH_BINS: dict[str, tuple[int, int]] = {"5-10": (5, 10), "11-17": (11, 17), "18-25": (18, 25)}
LENGTH_BAND = (0.25, 0.42)
NUMBER_BAND = (0.10, 0.22)  # target about 15%
NAME_BAND = (0.18, 0.35)  # target about 25%


def _words(text: str) -> list[str]:
    """Split a block of whitespace-separated words (keeps the long lists readable)."""
    return text.split()


_UNITS = _words(
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
_ORDINALS = _words(
    "third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth "
    "hundredth thousandth"
)
# "one", "first" and "second" are left out on purpose: they are too often not numbers.
NUMBER_WORDS = frozenset(
    [*_UNITS, *_TENS, *_ORDINALS, "hundred", "hundreds", "thousand", "thousands", "million"]
)
NUMBER_PHRASES = ("o'clock", "half past", "quarter past", "quarter to")

# Personal names, place names and the words of multi-word place names used in the corpus.
# Every capitalised word that is not sentence-initial must be listed here or in
# OTHER_PROPER, so a new name cannot slip in unnoticed.
NAMES = frozenset(
    _words(
        """
    Abbott Agnes Albert Alice Americas Anna Arthur Ashby Ashworth Australia Beacon Ben Benjamin
    Bennett Betty Brackley Briggs Bristol Canada Carlow Carrow Carter Castle Catherine Clara
    Common Cornwall Daniel Dawson Dunford Dunmore Edward Eleanor Ellerby Elmwood Emily Fairfax
    Farm Fenwick Fisher Fletcher Frances Frank Fred George Glenmoor Grace Gray Hadley Hale
    Hallam Hannah Harold Harper Harwell Harwick Henry Hill Hobbs Hollins Ireland Isabel
    Isbourne Island Jack James Jane Joe Jonah Kate Kelmarsh Kingsbay Lacey Lane Leeds Lily Lion
    London Lowell Lucy Lundy Lyle Mabel Margaret Marsh Martha Mary Michael Mill Millbrook Molly
    Nora Oliver Owen Penmore Penrose Peter Pike Polly Porthallow Portsmouth Ravensdale Red
    Ridley Robert Rosemary Row Ruth Samuel Seabrook Southwold Susan Thackeray Thomas Thornby
    Tom Turner Vera Walter Webb Wells Wendle Wexley Windmere
    """
    )
)
# Capitalised words that are not personal or place names: calendar words, titles, peoples.
OTHER_PROPER = frozenset(
    _words(
        """
    I January February March April May June July August September October November December
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday Mondays Tuesdays Wednesdays
    Thursdays Fridays Saturdays Sundays Christmas Eve East Romans Aunt Uncle Colonel Captain
    Miss
    """
    )
)


@dataclass(frozen=True)
class Sentence:
    """One corpus line with its location.

    Attributes:
        split: split name (file stem).
        line_no: 1-based line number in the file.
        text: the sentence exactly as stored (without the newline).
    """

    split: str
    line_no: int
    text: str

    @property
    def where(self) -> str:
        """Return ``split:line`` for messages."""
        return f"{self.split}:{self.line_no}"

    @property
    def words(self) -> list[str]:
        """Return the whitespace-separated words."""
        return self.text.split()


def _bare(token: str) -> str:
    """Strip punctuation and a possessive ending from a token."""
    word = token.strip(".,;:?!-")
    for suffix in ("'s", "s'"):
        if word.endswith(suffix) and len(word) > 2:
            return word[: -len(suffix)] if suffix == "'s" else word[:-1]
    return word


def has_number(text: str) -> bool:
    """Return whether a sentence contains a spoken number.

    Args:
        text: the sentence.

    Returns:
        True when a cardinal (two upward), an ordinal (third upward) or a clock phrase occurs.
    """
    lowered = text.lower()
    if any(phrase in lowered for phrase in NUMBER_PHRASES):
        return True
    return any(_bare(tok).lower() in NUMBER_WORDS for tok in lowered.split())


def names_in(text: str) -> list[str]:
    """Return the personal or place names in a sentence.

    Args:
        text: the sentence.

    Returns:
        Listed names (see NAMES) and any word following a title such as ``Mr.``.
    """
    found: list[str] = []
    tokens = text.split()
    for i, tok in enumerate(tokens):
        word = _bare(tok)
        if word in NAMES or (i > 0 and _bare(tokens[i - 1]).rstrip(".") in TITLES):
            found.append(word)
    return found


def line_problems(sentence: Sentence) -> list[str]:
    """Return every rule a single line breaks.

    Args:
        sentence: the line to check.

    Returns:
        Human-readable problems; empty when the line is fine.
    """
    text = sentence.text
    problems: list[str] = []
    if text != text.strip() or "  " in text:
        problems.append("stray whitespace")
    if not text.isascii() or not ALLOWED_CHARS.match(text):
        bad = sorted({c for c in text if not ALLOWED_CHARS.match(c)})
        problems.append(f"disallowed characters {bad!r}")
    if not text[:1].isupper():
        problems.append("does not start with a capital letter")
    if text[-1:] not in {".", "?", "!"}:
        problems.append("does not end with . ? or !")
    n_words = len(sentence.words)
    if not MIN_WORDS <= n_words <= MAX_WORDS:
        problems.append(f"{n_words} words (allowed {MIN_WORDS}-{MAX_WORDS})")
    for i, tok in enumerate(sentence.words[:-1]):
        if tok.endswith(".") and tok not in ABBREVIATIONS:
            problems.append(f"full stop inside the sentence after {tok!r} (word {i + 1})")
    for i, tok in enumerate(sentence.words):
        word = _bare(tok).rstrip(".")
        if i == 0 or not word[:1].isupper():
            continue
        if word not in NAMES and word not in OTHER_PROPER and word not in TITLES:
            problems.append(f"capitalised word {word!r} is in neither NAMES nor OTHER_PROPER")
    return problems


def read_split(path: Path) -> list[Sentence]:
    """Read one split file.

    Args:
        path: the ``.txt`` file.

    Returns:
        Its sentences in order.

    Raises:
        ValueError: when the file is not UTF-8, has blank lines or lacks a final newline.
    """
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 ({exc})") from exc
    if not content.endswith("\n"):
        raise ValueError(f"{path}: missing final newline")
    if "\r" in content:
        raise ValueError(f"{path}: carriage return found; use plain newlines")
    lines = content[:-1].split("\n")
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise ValueError(f"{path}: blank lines at {blank[:10]}")
    return [Sentence(path.stem, i + 1, line) for i, line in enumerate(lines)]


def _key(text: str) -> str:
    """Return a normalised form for duplicate detection."""
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def collision_problems(sentences: Iterable[Sentence]) -> list[str]:
    """Find duplicates and shared five-word prefixes within and across splits.

    Args:
        sentences: all sentences of all splits.

    Returns:
        Problems naming both locations.
    """
    problems: list[str] = []
    seen_full: dict[str, Sentence] = {}
    seen_prefix: dict[str, Sentence] = {}
    for sentence in sentences:
        key = _key(sentence.text)
        prefix = " ".join(key.split()[:PREFIX_WORDS])
        if key in seen_full:
            problems.append(f"{sentence.where}: duplicate of {seen_full[key].where}")
        elif prefix in seen_prefix:
            other = seen_prefix[prefix]
            problems.append(f"{sentence.where}: shares first five words with {other.where}")
        seen_full.setdefault(key, sentence)
        seen_prefix.setdefault(prefix, sentence)
    return problems


def proportions(sentences: list[Sentence]) -> dict[str, float]:
    """Measure the share of each length bin, of numbers and of names.

    Args:
        sentences: a non-empty list of sentences.

    Returns:
        Shares in [0, 1] keyed by ``len 5-10`` etc., ``numbers`` and ``names``.
    """
    total = len(sentences)
    shares = {
        f"len {label}": sum(lo <= len(s.words) <= hi for s in sentences) / total
        for label, (lo, hi) in LENGTH_BINS.items()
    }
    shares["numbers"] = sum(has_number(s.text) for s in sentences) / total
    shares["names"] = sum(bool(names_in(s.text)) for s in sentences) / total
    return shares


def _band_problems(shares: dict[str, float]) -> list[str]:
    """Compare overall shares with the allowed bands."""
    problems = []
    bands = {f"len {label}": LENGTH_BAND for label in LENGTH_BINS}
    bands["numbers"] = NUMBER_BAND
    bands["names"] = NAME_BAND
    for key, (lo, hi) in bands.items():
        if not lo <= shares[key] <= hi:
            problems.append(f"overall {key} share {shares[key]:.3f} outside [{lo}, {hi}]")
    return problems


def _row(label: str, count: int, shares: dict[str, float]) -> str:
    """Format one line of the proportions table."""
    return f"{label:<12} {count:5d}  " + "  ".join(f"{v:7.3f}" for v in shares.values())


def check(directory: Path) -> list[str]:
    """Check every split file in a directory and print the measured proportions.

    Args:
        directory: folder holding ``train.txt``, ``dev.txt``, ``test-clean.txt``,
            ``test-other.txt``.

    Returns:
        All problems found; empty when the corpus passes.
    """
    problems: list[str] = []
    everything: list[Sentence] = []
    header = "split        count  len5-10 len11-17 len18-25 numbers  names"
    print(header)
    for split, expected in EXPECTED_COUNTS.items():
        path = directory / f"{split}.txt"
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            sentences = read_split(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if len(sentences) != expected:
            problems.append(f"{path}: {len(sentences)} sentences, expected {expected}")
        for sentence in sentences:
            problems.extend(f"{sentence.where}: {p}" for p in line_problems(sentence))
        shares = proportions(sentences)
        print(_row(split, len(sentences), shares))
        everything.extend(sentences)
    if everything:
        shares = proportions(everything)
        print(_row("all", len(everything), shares))
        problems.extend(_band_problems(shares))
        problems.extend(collision_problems(everything))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the check from the command line.

    Args:
        argv: optional ``[DIR]``; defaults to this script's folder.

    Returns:
        Process exit status: 0 when the corpus passes, 1 otherwise.
    """
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path(__file__).resolve().parent
    problems = check(directory)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
