"""Counts written as words in the scripts a translated benchmark item comes in, read as their values.

A translation keeps a problem's digits but not its number words: "four schools" becomes "четыре школы", "চারটি",
"四间学校". The words are num2words' own (0 to 100, the hundreds and a thousand) for the languages whose script
cannot be mistaken for English: Russian (Cyrillic), Bengali, Telugu, and Japanese kanji numerals, which Chinese
shares (with 两 for two). Latin-script languages are left out: their number words are English words too ("once"
is eleven in Spanish), and Thai, written without spaces, hides its number words inside others (สาม, three, in
สามี, husband). One is left out as in English: far more often an article than a count.

Bengali and Telugu attach classifiers and case endings to a numeral (চারটি: four + the classifier টি), so a word
there matches a table word it starts with when at most `INDIC_TAIL` code points follow and the first of them starts
a syllable (a letter, not a vowel sign: তিনি, he, is not তিন, three).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from num2words import num2words

SPACED = ("ru", "bn", "te")
INDIC_TAIL = 2
_CJK_NUMERAL = re.compile(r"[〇零一二三四五六七八九十百千两兩]+")
_WORD = re.compile(r"[\w\u0980-\u09ff\u0c00-\u0c7f]+")
"""A word; Bengali and Telugu vowel signs are marks, not `\\w`."""
_INDIC_SCRIPT = re.compile(r"[\u0980-\u09ff\u0c00-\u0c7f]")


def _values() -> list[int]:
    return [*range(2, 101), *range(200, 1000, 100), 1000]


@functools.cache
def spaced_words() -> dict[str, int]:
    """Word -> value for the space-separated languages; a word of several values (none known) is dropped."""
    table: dict[str, set[int]] = {}
    for lang in SPACED:
        for value in _values():
            words = unicodedata.normalize("NFKC", num2words(value, lang=lang)).lower().split()
            word = words[-1] if value % 100 == 0 else " ".join(words)
            if " " not in word:
                table.setdefault(word, set()).add(value)
    return {word: values.pop() for word, values in table.items() if len(values) == 1}


@functools.cache
def kanji_numbers() -> dict[str, int]:
    """Kanji numeral -> value, 2 to 1000, with the optional leading 一 of 一百 and 一千."""
    table = {num2words(value, lang="ja"): value for value in range(2, 1001)}
    table |= {"一" + text: value for text, value in table.items() if text[0] in "百千"}
    return table


def word_numbers(text: str) -> list[int]:
    """The values of the number words in `text` (lower-cased, NFKC-normalised by the caller)."""
    found = []
    words = spaced_words()
    for word in _WORD.findall(text):
        if word in words:
            found.append(words[word])
        elif _INDIC_SCRIPT.match(word):
            stem = next((word[:-tail] for tail in range(1, INDIC_TAIL + 1)
                         if word[:-tail] in words and not unicodedata.category(word[-tail]).startswith("M")), None)
            if stem is not None:
                found.append(words[stem])
    kanji = kanji_numbers()
    for run in _CJK_NUMERAL.findall(text.replace("两", "二").replace("兩", "二")):
        if run in kanji:
            found.append(kanji[run])
    return found
