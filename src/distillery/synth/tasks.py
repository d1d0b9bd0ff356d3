"""Synthetic queries in the paper's six categories, each rebuilt exactly from (seed, category, index).

A prompt starts with its `Problem ID: synth-<seed>-<category>-<index>` line, so the synthetic teacher rebuilds
the task (gold answer, tests, constraints) from the prompt alone, with nothing held in memory per corpus.
What a real verifier checks:
- math: integer arithmetic with a gold answer (Math-Verify);
- code: a call-style Python function with tests of its return value (the sandbox);
- science: four options and a gold letter (the multiple-choice verifier);
- instruction_following, chat, general: IFEval constraints (the instruction checker; a rehearsal has no judge
  or reward model, so chat and general carry one or two constraints instead).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from distillery.synth.words import prose, words

MIX: dict[str, float] = {"math": 0.295, "code": 0.172, "science": 0.092, "instruction_following": 0.019,
                         "chat": 0.331, "general": 0.091}
"""Category shares of the paper's 1.89M queries (AM-Thinking-v1-Distilled's card, rounded)."""

PROMPT_WORDS: dict[str, tuple[float, float]] = {"math": (40, 0.6), "code": (220, 0.5), "science": (70, 0.5),
                                                 "instruction_following": (60, 0.6), "chat": (90, 0.8),
                                                 "general": (50, 0.7)}
"""(median, sigma) of the lognormal number of context words per prompt, by category."""

KEYWORDS = ("lantern", "harbor", "violet", "compass", "meadow", "glacier", "orchid", "saffron", "quartz", "falcon")
"""Words outside the filler vocabulary, so a constraint on them is met or broken only on purpose."""

_ID = re.compile(r"Problem ID: synth-(\d+)-([a-z_]+)-(\d+)")


@dataclass(frozen=True)
class Task:
    seed: int
    category: str
    index: int
    prompt: str
    difficulty: float
    """In [0, 1): how much harder than the teacher's base rate each attempt finds this query."""
    answer: str | None = None
    tests: dict[str, Any] | None = None
    instructions: list[dict[str, Any]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    """What the teacher needs to write a right or a wrong answer."""

    def row(self) -> dict[str, Any]:
        """The task as a flat ingest row (`prompt`, `answer`, `tests`, `instruction_id_list` + `kwargs`)."""
        row: dict[str, Any] = {"prompt": self.prompt, "category": self.category, "source": "synth"}
        if self.answer is not None:
            row["answer"] = self.answer
        if self.tests is not None:
            row["tests"] = self.tests
        if self.instructions:
            row["instruction_id_list"] = [i["id"] for i in self.instructions]
            row["kwargs"] = [i["kwargs"] for i in self.instructions]
        return row


def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def _context(rng: random.Random, category: str) -> str:
    median, sigma = PROMPT_WORDS[category]
    count = max(4, int(rng.lognormvariate(math.log(median), sigma)))
    return prose(rng, count, paragraph=80)


def _math(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    a, b, c = rng.randint(12, 999), rng.randint(2, 99), rng.randint(-500, 500)
    gold = a * b + c
    sign = "+" if c >= 0 else "-"
    return f"Compute ${a} \\times {b} {sign} {abs(c)}$.", str(gold), {"gold": gold}


def _code(rng: random.Random, index: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = f"combine_{index}"
    k, m = rng.randint(2, 9), rng.randint(3, 17)
    cases = [(rng.randint(-50, 50), rng.randint(-50, 50)) for _ in range(2)]
    tests = {"inputs": [f"{x}\n{y}" for x, y in cases], "outputs": [json.dumps(x * k + y % m) for x, y in cases],
             "fn_name": name}
    text = (f"Write a Python function `{name}(x, y)` that returns `x * {k} + y % {m}` "
            f"(Python's `%`). For example `{name}({cases[0][0]}, {cases[0][1]})` returns {tests['outputs'][0]}.")
    return text, tests, {"name": name, "k": k, "m": m}


def _science(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    letters = "ABCD"
    options = [" ".join(words(rng, rng.randint(2, 6))) for _ in letters]
    gold = rng.choice(letters)
    listed = "\n".join(f"({letter}) {option}" for letter, option in zip(letters, options))
    return f"Which of the following is correct?\n{listed}", gold, {"gold": gold}


_CONSTRAINTS = ("punctuation:no_comma", "keywords:existence", "keywords:forbidden_words",
                "detectable_format:number_bullet_lists", "detectable_format:title", "change_case:english_lowercase",
                "length_constraints:number_words", "startend:end_checker")


def _constraints(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """`count` distinct IFEval constraints that one response can meet together."""
    chosen = rng.sample(_CONSTRAINTS, count)
    picked = rng.sample(KEYWORDS, 3)
    kwargs = {
        "punctuation:no_comma": {},
        "keywords:existence": {"keywords": picked[:2]},
        "keywords:forbidden_words": {"forbidden_words": [picked[2]]},
        "detectable_format:number_bullet_lists": {"num_bullets": rng.randint(2, 5)},
        "detectable_format:title": {},
        "change_case:english_lowercase": {},
        "length_constraints:number_words": {"num_words": rng.choice((40, 60, 80)), "relation": "at least"},
        "startend:end_checker": {"end_phrase": f"any other {rng.choice([k for k in KEYWORDS if k not in picked])} questions?"},
    }
    return [{"id": name, "kwargs": kwargs[name]} for name in chosen]


_PHRASES = {
    "punctuation:no_comma": "Do not use any commas.",
    "keywords:existence": "Mention the words {keywords}.",
    "keywords:forbidden_words": "Do not use the word {forbidden_words}.",
    "detectable_format:number_bullet_lists": "Give exactly {num_bullets} bullet points in markdown (* item).",
    "detectable_format:title": "Give your answer a title in double angular brackets, like <<title>>.",
    "change_case:english_lowercase": "Write everything in lowercase letters.",
    "length_constraints:number_words": "Write at least {num_words} words.",
    "startend:end_checker": "End your response with the exact phrase \"{end_phrase}\".",
}


def describe(instructions: list[dict[str, Any]]) -> str:
    parts = []
    for item in instructions:
        kwargs = {k: " and ".join(v) if isinstance(v, list) else v for k, v in item["kwargs"].items()}
        parts.append(_PHRASES[item["id"]].format(**kwargs))
    return " ".join(parts)


def make_task(seed: int, category: str, index: int) -> Task:
    """The task (seed, category, index) names; the same arguments always give the same task."""
    if category not in MIX:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(MIX)}")
    rng = _rng(seed, category, index)
    head = f"Problem ID: synth-{seed}-{category}-{index}\n\n{_context(rng, category)}\n\n"
    difficulty = rng.random()
    if category == "math":
        text, gold, spec = _math(rng)
        return Task(seed, category, index, head + text + " Put the final answer in \\boxed{}.", difficulty,
                    answer=gold, spec=spec)
    if category == "code":
        text, tests, spec = _code(rng, index)
        return Task(seed, category, index, head + text, difficulty, tests=tests, spec=spec)
    if category == "science":
        text, gold, spec = _science(rng)
        return Task(seed, category, index, head + text, difficulty, answer=gold, spec=spec)
    count = rng.randint(2, 3) if category == "instruction_following" else rng.randint(1, 2)
    instructions = _constraints(rng, count)
    ask = {"instruction_following": "Write a short piece about this.", "chat": "What do you think about this?",
           "general": "Explain this briefly."}[category]
    return Task(seed, category, index, f"{head}{ask} {describe(instructions)}", difficulty, instructions=instructions)


def task_from_prompt(prompt: str) -> Task:
    """Rebuild the task a synthetic prompt was made from; ValueError when the prompt is not synthetic."""
    found = _ID.search(prompt)
    if found is None:
        raise ValueError(f"not a synthetic prompt (no 'Problem ID: synth-...' line): {prompt[:80]!r}")
    return make_task(int(found.group(1)), found.group(2), int(found.group(3)))


def category_counts(n: int, mix: dict[str, float] = MIX) -> dict[str, int]:
    """`n` split over the categories by `mix`, largest remainders rounded up, summing to `n` exactly."""
    total = sum(mix.values())
    exact = {c: n * share / total for c, share in mix.items()}
    counts = {c: int(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: counts[c] - exact[c])[: n - sum(counts.values())]:
        counts[c] += 1
    return counts
