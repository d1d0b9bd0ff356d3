"""A labelled duplicate set built from real problems: exact copies, formatting changes, word edits, paraphrases.

Bases are MATH-500 and LiveCodeBench problems read from the packaged benchmark folder; every variant is derived with
a seeded RNG, so the set is the same on every run. Paraphrases are written by hand (a rewording keeps the problem
but changes most of its words) and are what n-gram methods are not expected to catch.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

FILLERS = ("please", "now", "carefully", "exactly", "also", "then", "here", "below")


def formatting_change(text: str, rng: random.Random) -> str:
    """Same words; other case, spacing, line breaks and zero-width spaces (equal once cleaned and normalised)."""
    words = text.split()
    out = [w.upper() if rng.random() < 0.2 else w + "\u200b" if rng.random() < 0.1 else w for w in words]
    return ("  " if rng.random() < 0.5 else "\n").join(out) + rng.choice(["", " ", "\n\n"])


def word_edits(text: str, rng: random.Random, rate: float = 0.05) -> str:
    """Substitute, delete, insert or swap about `rate` of the words (at least one edit)."""
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        position = rng.randrange(len(words))
        kind = rng.choice(["substitute", "delete", "insert", "swap"])
        if kind == "substitute":
            words[position] = rng.choice(FILLERS)
        elif kind == "delete" and len(words) > 3:
            del words[position]
        elif kind == "insert":
            words.insert(position, rng.choice(FILLERS))
        elif position + 1 < len(words):
            words[position], words[position + 1] = words[position + 1], words[position]
    return " ".join(words)


PARAPHRASES = [
    ("What is the smallest positive integer that is divisible by each of the numbers 1 through 10?",
     "Find the least natural number which every integer from one to ten divides evenly."),
    ("How many ways can 5 different books be arranged on a shelf?",
     "Count the orderings of five distinct books placed in a row on a bookshelf."),
    ("A rectangle has a perimeter of 30 units and its length is twice its width. What is its area?",
     "The perimeter of a rectangle equals 30, and the long side is double the short side. Compute the area."),
    ("Write a function that returns the number of vowels in a given string.",
     "Implement a routine counting how many characters of an input text are a, e, i, o or u."),
    ("If a train travels 120 miles in 2 hours, what is its average speed in miles per hour?",
     "A locomotive covers one hundred twenty miles over two hours. Give the mean speed in mph."),
    ("Find the sum of all positive divisors of 36.",
     "Add up every positive integer that divides thirty-six with no remainder."),
]


@dataclass(frozen=True)
class Labelled:
    text: str
    kind: str
    """base, exact, formatting, edits, paraphrase, unrelated."""
    base: int | None
    """Index of the text this one copies (None for bases and unrelated texts)."""
    category: str = "math"
    """Exact copies come under another category: the same text with another id, so ingest keeps both."""


def load_problems(benchmarks_dir: Path, count: int) -> list[str]:
    math = [json.loads(line)["problem"] for line in (benchmarks_dir / "math500" / "math500.jsonl").open()]
    code = [json.loads(line)["question"] for line in (benchmarks_dir / "livecodebench" / "lcb_v5_public_tests.jsonl").open()]
    problems = [p for p in math + code if len(p.split()) >= 12]
    return random.Random(0).sample(problems, count)


def build(benchmarks_dir: Path, bases: int = 120, unrelated: int = 200, seed: int = 7) -> list[Labelled]:
    """`bases` problems each with an exact copy, a formatting change and two edited copies; unrelated problems."""
    rng = random.Random(seed)
    problems = load_problems(benchmarks_dir, bases + unrelated)
    rows: list[Labelled] = []
    for text in problems[:bases]:
        base = len(rows)
        rows.append(Labelled(text, "base", None))
        rows.append(Labelled(text, "exact", base, "general"))
        rows.append(Labelled(formatting_change(text, rng), "formatting", base))
        rows.append(Labelled(word_edits(text, rng, 0.03), "edits", base))
        rows.append(Labelled(word_edits(text, rng, 0.08), "edits", base))
    for text, paraphrase in PARAPHRASES:
        base = len(rows)
        rows.append(Labelled(text, "base", None))
        rows.append(Labelled(paraphrase, "paraphrase", base))
    rows.extend(Labelled(text, "unrelated", None) for text in problems[bases:])
    return rows
