"""A deterministic model of each paper teacher: how long it thinks, how it lays out its answer, how often it is
right, and how it degenerates.

Everything about one answer is drawn from `random.Random(profile, seed)`, where `generate` makes the seed from
(run seed, query id, teacher, attempt): the same attempt always gets the same answer, and a failed attempt's
retry gets a new draw, so verify-and-regenerate really regenerates. Whether an attempt is right is drawn first
(`pass_rate` scaled by the query's difficulty); the answer is then written to be right or wrong for a real
verifier: a correct or an off-by-some boxed number, a program whose return value is or is not the tested
one, a response that meets every IFEval constraint or breaks one, the gold or another option letter.

Lengths (`tokens` ~ 4 characters) are lognormal with the profile's median and 99th percentile, times a
per-category factor and the recipe's `length_scale`. The tail past `max_tokens` is cut there, as an engine
would (finish `length`, no answer: the verifier fails it). Degenerate shares: `loop_rate` repeats one sentence
30 times in the reasoning (the 20-gram filter's case), `untagged_rate` drops the layout's closing tag (the
structure filter's), `overlong_rate` writes a complete answer right at `max_tokens` (the length cap's).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, Literal

from distillery.synth.tasks import Task
from distillery.synth.words import chars_per_word, prose, words

Layout = Literal["tagged", "r1", "qwen3"]
CHARS_PER_TOKEN = 4
Z_99 = 2.3263478740408408
"""The standard normal's 99th percentile: p99 = median * exp(Z_99 * sigma)."""

CATEGORY_LENGTH = {"math": 1.3, "code": 1.5, "science": 1.0, "instruction_following": 0.35, "chat": 0.45,
                   "general": 0.55}
"""Reasoning length per category relative to the profile's median (math and code think longest)."""


@dataclass(frozen=True)
class TeacherProfile:
    median_tokens: float
    p99_tokens: float
    zipf: float
    """Exponent of the filler's word frequencies: higher repeats common words more (lower perplexity)."""
    layout: Layout
    pass_rate: float
    """Chance that one attempt at a query of average difficulty is right."""
    loop_rate: float = 0.02
    untagged_rate: float = 0.02
    overlong_rate: float = 0.01

    @property
    def sigma(self) -> float:
        return math.log(self.p99_tokens / self.median_tokens) / Z_99


PROFILES: dict[str, TeacherProfile] = {
    "am-thinking-v1": TeacherProfile(median_tokens=2600, p99_tokens=20000, zipf=1.25, layout="tagged", pass_rate=0.80),
    "qwen3-235b-a22b": TeacherProfile(median_tokens=3200, p99_tokens=26000, zipf=1.1, layout="qwen3", pass_rate=0.76),
    "deepseek-r1": TeacherProfile(median_tokens=4200, p99_tokens=30000, zipf=1.0, layout="r1", pass_rate=0.72),
}
"""Shaped like the paper's Table 1 (AM-Thinking-v1 shortest and lowest-perplexity, DeepSeek-R1 longest)."""


def profile(name: str, **overrides: Any) -> TeacherProfile:
    """A named profile with some fields replaced; ValueError names the known profiles."""
    if name not in PROFILES:
        raise ValueError(f"unknown synthetic teacher profile {name!r}; expected one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **overrides)


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: int
    finish_reason: str
    label: dict[str, Any]
    """What the answer was written to be: {correct, degenerate} (degenerate: None, loop, untagged, overlong,
    truncated)."""


def answer(task: Task, teacher: TeacherProfile, name: str, seed: int, max_tokens: int,
           length_scale: float = 1.0) -> Answer:
    """The answer of `teacher` (profile `name`) to `task` for the attempt whose seed is `seed`."""
    rng = random.Random(f"{name}:{seed}")
    chance = min(0.99, max(0.02, teacher.pass_rate * (1.35 - 0.7 * task.difficulty)))
    correct = rng.random() < chance
    roll = rng.random()
    degenerate = ("loop" if roll < teacher.loop_rate else
                  "untagged" if roll < teacher.loop_rate + teacher.untagged_rate else
                  "overlong" if roll < teacher.loop_rate + teacher.untagged_rate + teacher.overlong_rate else None)
    median = teacher.median_tokens * CATEGORY_LENGTH[task.category] * length_scale
    tokens = max(16, int(rng.lognormvariate(math.log(median), teacher.sigma)))
    if degenerate == "overlong":
        tokens = int(max_tokens * rng.uniform(0.93, 0.98))
    final = final_answer(task, correct, rng, teacher.zipf)
    think_words = max(8, int((tokens * CHARS_PER_TOKEN - len(final)) / chars_per_word(teacher.zipf)))
    if degenerate == "loop":
        sentence = " ".join(words(rng, 24, teacher.zipf)).capitalize() + "."
        think = prose(rng, think_words // 4, teacher.zipf) + "\n\n" + " ".join([sentence] * 30)
    else:
        think = prose(rng, think_words, teacher.zipf)
    text = lay_out(think, final, teacher.layout, broken=degenerate == "untagged")
    if len(text) > max_tokens * CHARS_PER_TOKEN:
        return Answer(text[: max_tokens * CHARS_PER_TOKEN], max_tokens, "length",
                      {"correct": False, "degenerate": "truncated"})
    return Answer(text, max(1, len(text) // CHARS_PER_TOKEN), "stop", {"correct": correct, "degenerate": degenerate})


def lay_out(think: str, final: str, layout: Layout, broken: bool = False) -> str:
    """The teacher's own layout; `broken` drops the tag a degenerate answer of that layout misses."""
    if layout == "tagged":
        return (f"<think>\n{think}\n</think>\n{final}" if broken else
                f"<think>\n{think}\n</think>\n<answer>\n{final}\n</answer>")
    if layout == "r1":  # the opening <think> is in R1's chat template, so the output starts with the reasoning
        return f"{think}\n\n{final}" if broken else f"{think}\n</think>\n\n{final}"
    return f"<think>\n{think}\n\n{final}" if broken else f"<think>\n{think}\n</think>\n\n{final}"


def final_answer(task: Task, correct: bool, rng: random.Random, zipf: float = 1.1) -> str:
    """The answer part: right, or wrong for the reason its verifier checks."""
    spec = task.spec
    lead = prose(rng, rng.randint(8, 20), zipf) if task.category in ("math", "code", "science") else ""
    if task.category == "math":
        value = spec["gold"] if correct else spec["gold"] + rng.choice((-1, 1)) * rng.randint(1, 9)
        return f"{lead} The final answer is $\\boxed{{{value}}}$."
    if task.category == "code":
        extra = "" if correct else " + 1"
        return (f"{lead}\n\n```python\ndef {spec['name']}(x, y):\n    return x * {spec['k']} + y % {spec['m']}{extra}\n"
                "```")
    if task.category == "science":
        letter = spec["gold"] if correct else rng.choice([c for c in "ABCD" if c != spec["gold"]])
        return f"{lead} The answer is ({letter})."
    broken = None if correct else rng.choice([item["id"] for item in task.instructions])
    return constrained_response(task.instructions, broken, rng, zipf)


def constrained_response(instructions: list[dict[str, Any]], broken: str | None, rng: random.Random,
                         zipf: float = 1.1) -> str:
    """A response meeting every IFEval constraint in `instructions` except `broken`, which it breaks."""
    kwargs = {item["id"]: item["kwargs"] for item in instructions}

    def keeps(name: str) -> bool:
        return name in kwargs and name != broken

    short = broken == "length_constraints:number_words"
    body = 3 if short else kwargs.get("length_constraints:number_words", {}).get("num_words", 40) + 10
    parts = []
    if keeps("detectable_format:title"):
        parts.append("<<" + " ".join(words(rng, 3, zipf)) + ">>")
    parts.append(prose(rng, body, zipf, paragraph=10**6))
    if keeps("keywords:existence"):
        first, second = kwargs["keywords:existence"]["keywords"]
        parts.append(f"Think of the {first} and the {second}.")
    if broken == "keywords:forbidden_words":
        parts.append(f"Consider the {kwargs[broken]['forbidden_words'][0]}.")
    if broken == "punctuation:no_comma":
        parts.append("First, second, and third.")
    if "detectable_format:number_bullet_lists" in kwargs:
        count = kwargs["detectable_format:number_bullet_lists"]["num_bullets"]
        count += broken == "detectable_format:number_bullet_lists"
        parts.append("\n".join("* " + " ".join(words(rng, 1 if short else 3, zipf)) for _ in range(count)))
    if keeps("startend:end_checker"):
        parts.append(kwargs["startend:end_checker"]["end_phrase"])
    text = "\n\n".join(parts)
    if keeps("change_case:english_lowercase"):
        text = text.lower()
    elif broken == "change_case:english_lowercase":
        text = "Note. " + text
    return text
