"""Text checks of the `clean` stage: Unicode repair, and queries that point at a URL or image they lack.

Each function is pure and small so the stage reads as a list of keep-or-drop decisions with a reason.
"""

from __future__ import annotations

import re
import unicodedata

_KEEP_CONTROLS = frozenset("\n\t")
_DROP_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})
"""Control, lone surrogate, private-use and unassigned code points. Format characters (Cf) stay: ZWJ/ZWNJ carry
meaning in emoji and several scripts."""
_INVISIBLE = frozenset({"\ufeff", "\u200b", "\u2060", "\ufffd"})
"""Byte-order mark, zero-width space, word joiner, replacement character (the trace of a decoding error)."""


def repair_unicode(text: str) -> tuple[str, int]:
    """NFKC-normalise, unify newlines and drop control/invalid characters; return the text and how many went."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept = [ch for ch in text if ch in _KEEP_CONTROLS or (unicodedata.category(ch) not in _DROP_CATEGORIES and ch not in _INVISIBLE)]
    return "".join(kept), len(text) - len(kept)


URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_URL_REFERENCE = re.compile(
    r"\b(?:summari[sz]e|summary|read|visit|open|go to|click|check out|look at|watch|refer to|according to|based on|"
    r"described (?:in|at)|found (?:in|at)|(?:the|this|that|following)(?: \w+)? (?:link|page|article|website|site|url|"
    r"post|video|paper|document|repo|repository))\b[^.?!\n]{0,40}$",
    re.IGNORECASE,
)
_IMAGE_TOKEN = re.compile(r"<image>|<img\b|!\[[^\]]*\]\([^)]*\)|\[image\]|\[img\]", re.IGNORECASE)
_PICTURE = r"(?:image|picture|photo|photograph|figure|diagram|screenshot|illustration|drawing)s?"
_PLOT = r"(?:graph|chart|plot|table|map)s?"
"""Words that name a picture only when placed (`the graph below`): alone they are graph theory or data tables."""
_IMAGE_REFERENCE = re.compile(
    rf"\b(?:in|from|see|shown in|refer to|according to|based on|look at|given|using)\s+(?:the|this|that|these|those|an?|each)"
    rf"\s+{_PICTURE}\b"
    rf"|\b(?:the|this|that|these|those|an?)\s+(?:attached|above|below|following|provided|accompanying)\s+(?:{_PICTURE}|{_PLOT})\b"
    rf"|\b(?:{_PICTURE}|{_PLOT})\s+(?:below|above|attached|provided|shown)\b",
    re.IGNORECASE,
)
_INLINE_FIGURE = re.compile(r"\[asy\]|\\begin\{tikzpicture\}|<svg\b|```|\\begin\{(?:tabular|array)\}|\|\s*:?-{3,}", re.IGNORECASE)
"""A figure written out in the text ([asy], TikZ, SVG, a code block, a LaTeX or Markdown table): the query has it."""


def url_dependency(text: str) -> str | None:
    """The URL a query needs to be read from, or None: a URL that a reference phrase points at, or a URL that is
    most of the query. A URL merely quoted inside code or data (no reference phrase before it) is fine."""
    for match in URL.finditer(text):
        before = text[max(0, match.start() - 120):match.start()]
        rest_words = len(URL.sub(" ", text).split())
        if _URL_REFERENCE.search(before) or rest_words < 8:
            return match.group(0)
    return None


def image_dependency(text: str) -> str | None:
    """The phrase by which a query refers to an image it does not contain, or None."""
    token = _IMAGE_TOKEN.search(text)
    if token:
        return token.group(0)
    reference = _IMAGE_REFERENCE.search(text)
    if reference and not _INLINE_FIGURE.search(text):
        return reference.group(0)
    return None
