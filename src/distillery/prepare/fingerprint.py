"""A problem's content, apart from its wording: numbers, LaTeX expressions, variable names and code identifiers.

Two texts with the same fingerprint but different words are the same problem told otherwise (a paraphrase, a
translation: digits and LaTeX survive both); two texts with the same words but different numbers are one template
used twice. Tokens are typed strings:
- `n:<value>`: every number, in digits of any script (`1,000`, `1.000`, `23 786`, `1000.0`; `2,50` is `n:2.5`) or
  as a number word (English here; Russian, Bengali, Telugu and kanji in number_words.py);
- `t:<expression>`: a LaTeX math span of 4+ characters, without spaces, `\\left`/`\\right`, spacing commands or
  braces (`\\dfrac{m}{n}` and `\\frac mn` agree);
- `v:<name>`: a variable name inside math (`x`, `a_i`, `\\omega`; `xy` and `ABC` are letters side by side);
- `c:<identifier>`: a code identifier: a `def`/`class` name, an argument in `Input: nums = [...]`, a snake_case or
  camelCase name.

Comparisons weigh each token by its rarity among the benchmark items (`FingerprintIndex`), so that `n:2` or `v:x`
count little and `n:437` counts much.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from distillery.prepare.number_words import word_numbers

_MATH = re.compile(r"\$\$(.+?)\$\$|\$(?=\S)(.+?)(?<=\S)\$(?!\d)|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
"""Display and inline math; an inline `$` span opens before a non-space and closes after one, not before a digit
(pandoc's rule), so that two prices (`costs $4 ... and $5`) are not read as one formula."""
_NUMBER = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])|\d+(?:\.\d+)?")
_PROSE_NUMBER = re.compile(
    r"(?<![\d.,])(?P<grouped>[1-9]\d{0,2}(?P<sep>[ .,])\d{3}(?:(?P=sep)\d{3})*)(?P<fraction>[.,]\d+)?(?!\d)"
    r"|(?<![\d.,\[(])(?:0,\d+|\d+,\d{1,2})(?![\d,])|\d+(?:\.\d+)?")
"""A number in prose, written the ways translations write it: thousands grouped by `,`, `.` or a space (`1,000`,
`1.000`, `23 786`: groups of exactly three digits after a first group of one to three), a decimal point or comma
(`2.50`, `2,50`, `0,125`; not a list such as `[1,3]`). Inside math, `_NUMBER` reads `(3,4)` as two numbers."""
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")
_SPACING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)\b|\\[,;:! ]|\s+|[{}]")
_COMMAND = re.compile(r"\\([A-Za-z]+)")
_VARIABLE = re.compile(r"[A-Za-z](?:_\w)?")
_CODE = re.compile(r"\b(?:def|class)\s+(\w+)|\b([a-z]\w*)\s*=\s*[\[\"'\d-]|\b([a-z]+_[a-z_]+|[a-z]+[A-Z]\w*)\b")
_WORD_NUMBERS = {word: value for value, word in enumerate(
    ["zero", "_", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
     "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]) if word != "_"}
_WORD_NUMBERS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
                      "hundred": 100, "thousand": 1000})
"""`one` is left out: far more often a pronoun than a count, and `n:1` carries almost no weight anyway."""
_PLAIN_WORD = re.compile(r"[a-z]+")
_MATH_COMMANDS_IGNORED = frozenset({
    "frac", "dfrac", "tfrac", "cdot", "times", "text", "mathrm", "mathbf", "operatorname", "quad", "qquad", "left",
    "right", "big", "Big", "bigg", "Bigg", "displaystyle", "le", "leq", "ge", "geq", "ne", "neq", "ldots", "cdots",
    "dots"})


def _number(text: str) -> str:
    whole, _, fraction = text.replace(",", "").partition(".")
    fraction = fraction.rstrip("0")
    return "n:" + (whole.lstrip("0") or "0") + (f".{fraction}" if fraction else "")


def _prose_number(match: re.Match[str]) -> str:
    """`_PROSE_NUMBER`'s match as a token: group separators dropped, the decimal mark made a point."""
    grouped, fraction = match.group("grouped"), match.group("fraction") or ""
    if grouped is None:
        return _number(match.group(0).replace(",", "."))
    decimals = "." + fraction[1:] if fraction and fraction[0] != match.group("sep") else ""
    return _number(grouped.replace(match.group("sep"), "") + decimals)


def fingerprint(text: str) -> Counter[str]:
    """The typed content tokens of `text` with their counts."""
    text = unicodedata.normalize("NFKC", text)
    text = _NON_ASCII_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group(0))), text)
    tokens: Counter[str] = Counter()
    for match in _MATH.finditer(text):
        span = next(group for group in match.groups() if group is not None)
        tokens.update(_number(number.group(0)) for number in _NUMBER.finditer(span))
        expression = _SPACING.sub("", span).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        if len(expression) >= 4:
            tokens["t:" + expression] += 1
        stripped = _COMMAND.sub(" ", span)
        tokens.update("v:" + name for name in _VARIABLE.findall(stripped))
        tokens.update("v:\\" + name for name in _COMMAND.findall(span) if name not in _MATH_COMMANDS_IGNORED)
    outside = _MATH.sub(" ", text)
    tokens.update(_prose_number(number) for number in _PROSE_NUMBER.finditer(outside))
    for match in _CODE.finditer(outside):
        tokens["c:" + next(group for group in match.groups() if group is not None)] += 1
    lowered = outside.lower()
    tokens.update(f"n:{_WORD_NUMBERS[word]}" for word in _PLAIN_WORD.findall(lowered) if word in _WORD_NUMBERS)
    tokens.update(f"n:{value}" for value in word_numbers(lowered))
    return tokens


@dataclass(frozen=True)
class Comparison:
    """How much of a benchmark item's content a query carries, and how much of the query's the item carries."""

    numbers: float
    """Weighted share of the item's distinct numbers found in the query (nan: the item has too few to tell)."""
    content: float
    """Weighted share of all the item's distinct tokens found in the query."""
    reverse: float
    """Weighted share of the query's distinct tokens found in the item."""
    info: float
    """Weight of the item's tokens found in the query (the evidence: rare shared numbers weigh most)."""
    rare: int
    """Distinct shared numbers, expressions and code names of weight >= RARE (not 1, 2, 10, `m+n`, which many
    items have; variable names never count)."""
    shared: int
    """Distinct shared tokens of any kind."""


class FingerprintIndex:
    """Benchmark fingerprints with rarity weights and an inverted index over their rarer tokens.

    A token's weight is log(1 + N / df) over the N benchmark items; one no item has weighs log(1 + N). Numbers
    count double: they are what a paraphrase keeps and a template changes.
    """

    NUMBER_WEIGHT = 2.0
    RARE = 4.0

    def __init__(self, texts: Sequence[str], min_number_weight: float = 4.0, posting_limit: int = 50) -> None:
        self.prints = [set(fingerprint(text)) for text in texts]
        self.min_number_weight = min_number_weight
        df: Counter[str] = Counter(token for tokens in self.prints for token in tokens)
        self.count = len(texts)
        self.weights = {token: self._weight(token, n) for token, n in df.items()}
        self.postings: dict[str, list[int]] = defaultdict(list)
        for item, tokens in enumerate(self.prints):
            for token in tokens:
                if df[token] <= posting_limit:
                    self.postings[token].append(item)
        self.totals = [sum(self.weights[t] for t in tokens) for tokens in self.prints]
        self.indexed = [sum(self.weights[t] for t in tokens if df[t] <= posting_limit) for tokens in self.prints]

    def _weight(self, token: str, df: int) -> float:
        weight = math.log1p(self.count / max(df, 1))
        return weight * self.NUMBER_WEIGHT if token.startswith("n:") else weight

    def weight(self, token: str) -> float:
        return self.weights.get(token) or self._weight(token, 0)

    def compare(self, query: Iterable[str], item: int) -> Comparison:
        tokens = set(query)
        own = self.prints[item]
        shared = own & tokens
        numbers = [t for t in own if t.startswith("n:")]
        number_total = sum(self.weights[t] for t in numbers)
        number_share = (sum(self.weights[t] for t in numbers if t in tokens) / number_total
                        if number_total >= self.min_number_weight else math.nan)
        shared_weight = sum(self.weights[t] for t in shared)
        query_total = sum(self.weight(t) for t in tokens)
        return Comparison(numbers=number_share, content=shared_weight / self.totals[item] if self.totals[item] else 0.0,
                          reverse=shared_weight / query_total if query_total else 0.0, info=shared_weight,
                          rare=sum(not t.startswith("v:") and self.weights[t] >= self.RARE for t in shared),
                          shared=len(shared))

    def matches(self, query: Iterable[str], min_content: float) -> list[int]:
        """Items whose rarer (indexed) tokens the query carries for at least `min_content` of their weight."""
        found: dict[int, float] = defaultdict(float)
        for token in set(query):
            for item in self.postings.get(token, ()):
                found[item] += self.weights[token]
        return sorted(item for item, weight in found.items() if weight >= min_content * self.indexed[item])
