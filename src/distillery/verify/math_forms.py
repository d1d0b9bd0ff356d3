"""Rewrite the forms of a math answer that Math-Verify reads wrongly into forms it reads right, and find the
two things it ignores: the unit an answer is given in, and whether it is a bare decimal.

Each rewrite keeps the value: a one-column (or one-row) matrix becomes a tuple, `1.5e6` becomes
`1.5\\times 10^{6}`, thin-space digit separators go, a repeating decimal (`0.\\overline{3}`, `0.1666...`)
becomes its exact fraction, a number written in words becomes digits (text2num), and the imaginary unit's
other spellings (`\\mathrm{i}`, `\\imath`, `\\sqrt{-1}`, a Python-style `2+3j`) become `i`; `x \\in S` becomes `S`
and spacing commands before a letter go; `\\langle v \\rangle` is a tuple, markdown emphasis around the
answer goes, an answer that is only digit groups split by plain spaces (`28 800`) is one number, an ordinal's
suffix goes (`12^{\\mathrm{th}}`, `12th` -> `12`), and a number in front of a tuple multiplies each entry
(`2(1, 2)`, also from `2\\begin{pmatrix}1\\\\2\\end{pmatrix}`). Every regex here
is linear in the input: these run in the verifier's worker processes, but a slow pattern would still cost
one timeout per answer.
"""

from __future__ import annotations

import re
from fractions import Fraction

_COLUMN = re.compile(r"\\begin\{([pbB]?matrix)\}(?P<body>[^{}]*?(?:\{[^{}]*\}[^{}]*?)*?)\\end\{\1\}")
_E_NOTATION = re.compile(r"(?<![\w\\.])(\d+(\.\d+)?)([eE])([+-]?)(\d+)(?![\w.])")
_TIMES_TEN = re.compile(r"(\d)\s*(?:[x×]|\\cdot|\*)\s*10\s*\^")
_SEPARATOR = r"(?:,?\\[,;:! ]|~|\{,\}|[\u2009\u202f\u00a0\u2006\u2008])"
_SEPARATED = re.compile(rf"(?<![\d.])\d{{1,3}}(?:{_SEPARATOR}\d{{3}})+(?![\d])")
_REPEATING_BAR = re.compile(r"(?<![\d.])(\d*)\.(\d*)\\(?:overline|bar|dot)\s*(?:\{(\d+)\}|(\d))")
_REPEATING_DOTS = re.compile(r"(?<![\d.])(\d*)\.(\d+)\s*(?:\\[lc]?dots|\.{3}|…)")
_IMAGINARY = re.compile(r"\\(?:mathrm|mathit|text|textrm|operatorname|mathbf)\s*\{\s*[ij]\s*\}|\\imath\b|\\jmath\b|\\sqrt\s*\{\s*-\s*1\s*\}")
_PYTHON_COMPLEX = re.compile(r"[\d\s.+\-*/()j]+")
_SPACED_GROUPS = re.compile(r"\d{1,3}(?: \d{3})+")
_SPACED_I = re.compile(r"(\d)\s+i\b")
_MEMBER_OF = re.compile(r"^\s*[A-Za-z]\s*\\in\s+")
_SPACING = re.compile(r"\\[,;:!]\s*(?=[A-Za-z\\])")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textrm|textbf|mbox|mathrm|operatorname)\s*\{([^{}]*)\}")
_WORDS = re.compile(r"[A-Za-z]+(?:[- ][A-Za-z]+)*")
_ORDINAL = re.compile(
    r"(?<=\d)\s*(?:\^\s*\{\s*(?:\\(?:mathrm|text|textrm|rm|mbox)\s*\{\s*(?:st|nd|rd|th)\s*\}|(?:st|nd|rd|th))\s*\}"
    r"|\\(?:mathrm|text|textrm|rm|mbox)\s*\{\s*(?:st|nd|rd|th)\s*\}|(?:st|nd|rd|th)\b)"
)
_SCALAR = r"-?\d+(?:\.\d+)?|-?\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}|-"
_SCALED_TUPLE = re.compile(rf"\s*\$?\s*(?P<scalar>{_SCALAR})\s*(?:\\cdot|\\times|\*)?\s*(?:\\left)?\((?P<body>[^()]*,[^()]*)(?:\\right)?\)\s*\$?\s*")
_LOOKALIKE = re.compile(r"(?<![A-Za-z\\])(?:\d+[OolISZB](?![A-Za-z])|[OolISZB]\d)|^\s*\$?\s*[OolSZ]\s*\$?\s*$")
"""A letter that looks like a digit (O/o for 0, l/I for 1, S for 5, Z for 2, B for 8) next to a digit, or alone."""


def _e_notation(match: re.Match[str]) -> str:
    """`1.5e6`, `2.5e-3`, `1E+06` -> `\\times 10^{n}`; `2e-1` stays, as it may be 2e - 1 with Euler's e."""
    mantissa, point, letter, sign, exponent = match.groups()
    if sign and not point and letter == "e":
        return match.group(0)
    return f"{mantissa}\\times 10^{{{'-' if sign == '-' else ''}{exponent}}}"


def _column_to_tuple(match: re.Match[str]) -> str:
    body = match.group("body")
    rows = [row.strip() for row in re.split(r"\\\\", body) if row.strip()]
    if len(rows) > 1 and all("&" not in row for row in rows):
        return "(" + ", ".join(rows) + ")"
    if len(rows) == 1:
        return "(" + ", ".join(cell.strip() for cell in rows[0].split("&")) + ")"
    return match.group(0)


def _repeating_fraction(whole: str, fixed: str, repeating: str) -> str:
    """`whole.fixed(repeating)(repeating)...` as an exact `\\frac{p}{q}` (or an integer)."""
    value = Fraction(int(whole or "0")) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
    value += Fraction(int(repeating), (10 ** len(repeating) - 1) * 10 ** len(fixed))
    return str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _bar(match: re.Match[str]) -> str:
    return _repeating_fraction(match.group(1), match.group(2), match.group(3) or match.group(4))


def _dots(match: re.Match[str]) -> str:
    """`0.1666...`: the shortest block that ends the digits at least twice repeats; no such block, no rewrite."""
    whole, digits = match.group(1), match.group(2)
    for period in range(1, min(6, len(digits) // 2) + 1):
        block = digits[-period:]
        if digits.endswith(block * 2):
            start = len(digits) - period
            while start >= period and digits[start - period:start] == block:
                start -= period
            return _repeating_fraction(whole, digits[:start], block)
    return match.group(0)


def number_from_words(text: str) -> str | None:
    """Digits for an answer that is only a number in words ("twenty-one", "\\text{five}.", "minus seven")."""
    from text_to_num import text2num

    inner = _TEXT_WRAPPER.sub(r"\1", text).strip().strip("$").strip().rstrip(".").strip().lower()
    sign = ""
    for prefix in ("minus ", "negative "):
        if inner.startswith(prefix):
            sign, inner = "-", inner.removeprefix(prefix)
    if len(inner) < 2 or not _WORDS.fullmatch(inner):  # a lone letter ("o") is a variable, not "oh"
        return None
    try:
        return sign + str(text2num(inner, "en"))
    except ValueError:
        return None


def looks_like_digit(text: str) -> bool:
    """Whether the answer has a letter standing for a digit (`1O`, `l5`, a lone `O`): never that number."""
    return bool(_LOOKALIKE.search(_TEXT_WRAPPER.sub(" ", text)))


def word_answer(text: str) -> str | None:
    """The answer as lower-case words when it is nothing but words ("Monday", `\\text{East}`, "the red car."),
    else None. A word has three letters and a vowel: `x` or `xy` are variables, not words."""
    inner = _TEXT_WRAPPER.sub(r"\1", text).strip().strip("$*_").strip().rstrip(".").strip().lower()
    inner = re.sub(r"^(?:the|a|an)\s+", "", inner)
    if not re.fullmatch(r"[a-z]+(?:[-' ][a-z]+)*", inner) or not re.search(r"[a-z]*[aeiouy][a-z]*", inner) \
            or not any(len(word) >= 3 and re.search(r"[aeiouy]", word) for word in re.split(r"[-' ]", inner)):
        return None
    return inner


def _words_in_prose(text: str) -> str:
    """Number words inside a prose answer ("There are five ways."), when it holds no digits and no LaTeX."""
    if re.search(r"[\d\\$]", text) or not re.search(r"[A-Za-z]", text):
        return text
    from text_to_num import alpha2digit

    return alpha2digit(text, "en", threshold=0)


def normalise_forms(text: str) -> str:
    """The answer with each equivalent form above rewritten; anything else is left as it is."""
    words = number_from_words(text)
    if words is not None:
        return words
    text = _words_in_prose(text.strip().strip("*_").strip())
    if _SPACED_GROUPS.fullmatch(text):
        return text.replace(" ", "")
    text = _MEMBER_OF.sub("", _SPACING.sub("", text))
    text = re.sub(r"\\langle\s*", "(", re.sub(r"\s*\\rangle", ")", text))
    text = _SPACED_I.sub(r"\1i", text)
    text = _COLUMN.sub(_column_to_tuple, text)
    text = _ORDINAL.sub("", text)
    scaled = _SCALED_TUPLE.fullmatch(text) if len(text) <= 400 else None  # quadratic in the commas: answers only
    if scaled:
        factor = "-1" if scaled.group("scalar") == "-" else scaled.group("scalar")
        text = "(" + ", ".join(f"{factor}\\cdot ({entry.strip()})" for entry in scaled.group("body").split(",")) + ")"
    text = _TIMES_TEN.sub(r"\1\\times 10^", text)
    text = _E_NOTATION.sub(_e_notation, text)
    text = _SEPARATED.sub(lambda match: re.sub(_SEPARATOR, "", match.group(0)), text)
    text = _REPEATING_BAR.sub(_bar, text)
    text = _REPEATING_DOTS.sub(_dots, text)
    text = _IMAGINARY.sub("i", text)
    if _PYTHON_COMPLEX.fullmatch(text.strip().strip("$").strip()) and re.search(r"\dj|[+-]\s*j", text):
        text = re.sub(r"(?<![A-Za-z])j(?![A-Za-z])", "i", text)
    return text


_UNIT_WORDS: dict[str, tuple[str, ...]] = {
    "millimetre": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "centimetre": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "metre": ("m", "meter", "meters", "metre", "metres"),
    "kilometre": ("km", "kilometer", "kilometers", "kilometre", "kilometres"),
    "inch": ("inch", "inches"),
    "foot": ("ft", "foot", "feet"),
    "yard": ("yd", "yds", "yard", "yards"),
    "mile": ("mi", "mile", "miles", "mph"),
    "second": ("s", "sec", "secs", "second", "seconds"),
    "minute": ("min", "mins", "minute", "minutes"),
    "hour": ("h", "hr", "hrs", "hour", "hours", "mph"),
    "day": ("day", "days"),
    "week": ("week", "weeks"),
    "year": ("year", "years"),
    "dollar": ("dollar", "dollars", "usd"),
    "cent": ("cent", "cents"),
    "degree": ("degree", "degrees", "deg"),
    "radian": ("rad", "rads", "radian", "radians"),
    "gram": ("g", "gram", "grams"),
    "kilogram": ("kg", "kilogram", "kilograms"),
    "pound": ("lb", "lbs", "pound", "pounds"),
    "ounce": ("oz", "ounce", "ounces"),
    "litre": ("l", "liter", "liters", "litre", "litres"),
    "millilitre": ("ml", "milliliter", "milliliters", "millilitre", "millilitres"),
    "gallon": ("gal", "gallon", "gallons"),
}
_UNIT_OF: dict[str, set[str]] = {}
for _unit, _words in _UNIT_WORDS.items():
    for _word in _words:
        _UNIT_OF.setdefault(_word, set()).add(_unit)
_NUMBER_THEN_WORDS = re.compile(r"\d[\s^{}]*([A-Za-z]+(?:(?:\s+|\s*/\s*)[A-Za-z]+){0,2})")


def units(text: str) -> frozenset[str]:
    """The known units an answer names: words in `\\text{}`/`\\mbox{}`, words right after a number, `^\\circ`, `\\$`.

    Outside `\\text{}` a single letter counts only when the number and its words end the answer (`5 m/s`,
    but not `5 m + 2`, where `m` is a variable). Unknown words are no unit.
    """
    found: set[str] = set()
    for inner in _TEXT_WRAPPER.findall(text):
        for word in re.findall(r"[a-z]+", inner.lower()):
            found.update(_UNIT_OF.get(word, ()))
    outside = _TEXT_WRAPPER.sub(" ", text)
    outside = re.sub(r"\\[A-Za-z]+", " ", outside.replace("\\$", " dollar ").replace("\\%", " ")).rstrip(" .$")
    for match in _NUMBER_THEN_WORDS.finditer(outside):
        ends_answer = match.end() == len(outside)
        for word in re.split(r"[\s/]+", match.group(1).lower()):
            if len(word) > 1 or ends_answer:
                found.update(_UNIT_OF.get(word, ()))
    if re.search(r"\^\s*\{?\s*\\circ|°", text):
        found.add("degree")
    if "\\$" in text:
        found.add("dollar")
    return frozenset(found)


_DECIMAL = re.compile(r"[-+]?\d*\.\d+")
_APPROXIMATION_WORDS = re.compile(
    r"\b(?:decimal|nearest|round(?:ed|ing)?|approximat\w*|estimate\w*|significant (?:figures|digits)|scientific notation)\b", re.IGNORECASE
)


def decimal_literal(text: str) -> str | None:
    """The decimal an answer is, when it is nothing but one (`0.3333`, `$\\approx 4.24$ cm`), else None."""
    bare = _TEXT_WRAPPER.sub(" ", text)
    bare = re.sub(r"\\boxed\s*\{|\\approx|≈|\\left|\\right|[{}$\s]|\\[,;!]", "", bare)
    bare = re.sub(r"(?:\\ldots|\\dots|\.{3}|…)$", "", bare).rstrip(".")
    unit = re.search(r"[A-Za-z]+$", bare)
    if unit and unit.group(0).lower() in _UNIT_OF:
        bare = bare[:unit.start()]
    return bare if _DECIMAL.fullmatch(bare) else None


def asks_for_approximation(question: str) -> bool:
    """Whether the question asks for a decimal or rounded answer (then a decimal may approximate the gold)."""
    return bool(_APPROXIMATION_WORDS.search(question))
