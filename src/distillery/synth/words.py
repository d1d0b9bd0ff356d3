"""Filler text: sentences of common English words drawn with Zipf frequencies, deterministic per random source.

A steeper Zipf exponent repeats the common words more, which is what a lower-perplexity teacher looks like to a
reference model. Fixed phrases elsewhere stay under 20 words so the 20-gram filter fires only on real loops.
"""

from __future__ import annotations

import itertools
import random
from functools import cache

WORDS = tuple(dict.fromkeys("""
the of and to a in is that it for as with was on be by this are we from at or an which one if have not but all
can will so then there their more these some its has when two into only each also value case first other than
number step same way result check need term part must because both let any next each given find since such
both order point side form line time three sum first know four total set rule true hold test give where small
large again example note equal hence four five method known root factor power prime even odd whole half range
model system energy force field mass light heat water cell plant animal rate change level area space world study
data table list word letter write read simple clear short long early late open close start end left right high
low good new old young public local human social common major minor basic final general specific natural recent
question answer problem solution reason idea plan story place family group student teacher city country market
process design program function variable input output loop array string graph tree node edge path count index
""".split()))


@cache
def _cumulative(exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank ** exponent) for rank in range(1, len(WORDS) + 1)))


def words(rng: random.Random, count: int, exponent: float = 1.1) -> list[str]:
    """`count` words drawn with Zipf(`exponent`) frequencies over `WORDS`."""
    return rng.choices(WORDS, cum_weights=_cumulative(exponent), k=count)


def prose(rng: random.Random, count: int, exponent: float = 1.1, paragraph: int = 120) -> str:
    """About `count` words as capitalised sentences of 6-18 words, a blank line every ~`paragraph` words."""
    drawn = words(rng, count, exponent)
    out: list[str] = []
    position = 0
    since_break = 0
    while position < len(drawn):
        length = rng.randint(6, 18)
        sentence = drawn[position:position + length]
        position += length
        out.append(" ".join(sentence).capitalize() + ".")
        since_break += len(sentence)
        if since_break >= paragraph:
            out.append("\n\n")
            since_break = 0
    return " ".join(out).replace(" \n\n ", "\n\n").strip()


@cache
def chars_per_word(exponent: float) -> float:
    """Mean characters a drawn word takes in prose, its following space included: turns a length in
    characters into a number of words."""
    weights = [1.0 / (rank ** exponent) for rank in range(1, len(WORDS) + 1)]
    return sum(w * (len(word) + 1) for w, word in zip(weights, WORDS)) / sum(weights)
