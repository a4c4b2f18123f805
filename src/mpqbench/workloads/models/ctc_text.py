"""Reference text -> the character alphabet of a CTC checkpoint (pure functions).

CTC checkpoints fine-tuned on LibriSpeech (wav2vec2, HuBERT, WavLM, data2vec-audio) emit
uppercase letters, the apostrophe and a word delimiter ("|"). A CTC training target must
use exactly that alphabet, so a free-form reference ("Mr. Hale paid $25 on the 3rd of
May, 1850.") is rewritten the way LibriSpeech transcripts are written
("MISTER HALE PAID TWENTY FIVE DOLLARS ON THE THIRD OF MAY EIGHTEEN FIFTY"):

1. Unicode NFC; typographic apostrophes (’ ‘ ʼ) become "'".
2. If the vocabulary has no digits, numbers are spelled out in words: cardinals
   ("1,200" -> "one thousand two hundred"), four-digit numbers 1100-1999 as years
   ("1850" -> "eighteen fifty", "1905" -> "nineteen oh five", "1900" -> "nineteen
   hundred"), ordinals ("3rd" -> "third"), decimals ("3.5" -> "three point five"),
   "$N" -> "N dollars", "N%" -> "N percent". These are the spoken forms the Whisper
   English normaliser used for scoring maps back to the same digits.
3. For an English (A-Z) vocabulary: "Mr." / "Mrs." / "Dr." become MISTER / MISSUS /
   DOCTOR (as LibriSpeech writes them) and "&" becomes "and".
4. Letter case follows the vocabulary (uppercase when it only has uppercase letters,
   lowercase when it only has lowercase ones).
5. Each remaining character is kept when it is a single-character vocabulary entry; the
   apostrophe is kept only between two letters or digits ("don't", "o'clock"; a quote
   like 'tis or students' loses it). A letter outside the vocabulary is replaced by its
   accent-free base letter when that is in the vocabulary ("é" -> "E"), otherwise
   dropped. Punctuation, symbols and the delimiter character itself become a word
   break. Whitespace is collapsed; words are separated by one space (the tokenizer's
   word delimiter stands for that space).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = (
    (re.compile(r"\bMrs\.?(?=\s|$)", re.IGNORECASE), "missus"),
    (re.compile(r"\bMr\.?(?=\s|$)", re.IGNORECASE), "mister"),
    (re.compile(r"\bDr\.?(?=\s|$)", re.IGNORECASE), "doctor"),
)
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})
_NUMBER = re.compile(
    r"(?P<dollar>\$)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<suffix>st|nd|rd|th|%)?",
    re.IGNORECASE,
)


def spell_cardinal(n: int) -> str:
    """English words for a non-negative integer ("one thousand two hundred five").

    Args:
        n: the number, ``0 <= n < 10**15``.

    Returns:
        lowercase words separated by single spaces (no "and", no hyphens).

    Raises:
        ValueError: ``n`` is negative or too large.
    """
    if n < 0 or n >= 10**15:
        raise ValueError(f"cannot spell {n}: only 0 <= n < 10**15 is supported")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {spell_cardinal(rest)}" if rest else "")
    for scale, word in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{spell_cardinal(high)} {word}" + (f" {spell_cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable")


def spell_ordinal(n: int) -> str:
    """English words for an ordinal ("twenty first")."""
    words = spell_cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*words[:-1], last])


def spell_year(n: int) -> str:
    """A year 1100-1999 as it is read aloud ("eighteen fifty", "nineteen oh five")."""
    if not 1100 <= n <= 1999:
        raise ValueError(f"spell_year handles 1100..1999, got {n}")
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{_ONES[century]} hundred"
    if rest < 10:
        return f"{_ONES[century]} oh {_ONES[rest]}"
    return f"{_ONES[century]} {spell_cardinal(rest)}"


def _spell_number(match: re.Match[str]) -> str:
    digits = match.group("int").replace(",", "")
    frac = match.group("frac")
    suffix = (match.group("suffix") or "").lower()
    n = int(digits)
    if n >= 10**15:
        words = " ".join(_ONES[int(d)] for d in digits)
    elif suffix in ("st", "nd", "rd", "th") and frac is None:
        words = spell_ordinal(n)
    elif frac is None and "," not in match.group("int") and len(digits) == 4 and 1100 <= n <= 1999:
        words = spell_year(n)
    else:
        words = spell_cardinal(n)
    if frac is not None:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if match.group("dollar"):
        words += " dollar" if n == 1 and frac is None else " dollars"
    if suffix == "%":
        words += " percent"
    return f" {words} "


def normalize_for_vocab(text: str, alphabet: Iterable[str]) -> str:
    """Rewrite ``text`` so every character is in ``alphabet`` (see the module docstring).

    Args:
        text: a reference transcript, any case and punctuation.
        alphabet: the single-character symbols the model can emit, *excluding* the word
            delimiter (words in the result are separated by a plain space).

    Returns:
        words of ``alphabet`` characters separated by single spaces ("" when nothing of
        ``text`` can be expressed in the alphabet).
    """
    chars = {c for c in alphabet if len(c) == 1 and not c.isspace()}
    letters = {c for c in chars if c.isalpha()}
    upper = bool(letters) and all(c.isupper() for c in letters)
    lower = bool(letters) and all(c.islower() for c in letters)
    english = {c.upper() for c in letters} >= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    if not any(c.isdigit() for c in chars):
        text = _NUMBER.sub(_spell_number, text)
    if english:
        for pattern, word in _ABBREVIATIONS:
            text = pattern.sub(word, text)
        text = text.replace("&", " and ")
    if upper:
        text = text.upper()
    elif lower:
        text = text.lower()

    out: list[str] = []
    for i, c in enumerate(text):
        if c == "'" and c in chars:
            before = text[i - 1] if i > 0 else ""
            after = text[i + 1] if i + 1 < len(text) else ""
            out.append("'" if before.isalnum() and after.isalnum() else " ")
        elif c in chars:
            out.append(c)
        elif c.isspace():
            out.append(" ")
        elif c.isalpha() or unicodedata.category(c).startswith("M"):
            base = "".join(
                b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b)
            )
            out.append(base if base and all(b in chars for b in base) else "")
        else:
            out.append(" ")
    return " ".join("".join(out).split())


__all__ = ["normalize_for_vocab", "spell_cardinal", "spell_ordinal", "spell_year"]
