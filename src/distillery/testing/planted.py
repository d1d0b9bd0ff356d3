"""Benchmark problems planted among clean queries, for decontamination.

Variants of real MATH-500 and AIME problems are derived at run time from the packaged benchmark files (formatting
changes, small word edits, the problem inside a prompt template, other numbers); rewordings are written here by
hand, in our own words, keyed by the item they reword. Clean queries are hand-written problems on the same topics
that are not benchmark problems, plus unrelated requests: none of them may be dropped.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from distillery.testing.labelled import word_edits

REWORDINGS = {
    "test/precalculus/807.json": "What are the polar coordinates (r, θ) of the point whose Cartesian coordinates are (0, 3)? Use r > 0 and an angle θ in [0, 2π).",
    "test/geometry/178.json": "Triangle ABC has a right angle at B, and the sine of angle A is twice its cosine. Find the tangent of angle A.",
    "test/prealgebra/1761.json": "Remmy needs to compute 10 divided by two thirds but forgot the rule. What should he multiply 10 by to get the same result?",
    "test/algebra/2199.json": "Hillary owns 11 coins, each a dime or a nickel, totaling 75 cents. Determine the number of nickels.",
    "test/counting_and_probability/71.json": "In how many ways can five identical balls be distributed into two identical boxes?",
    "test/geometry/483.json": "Each interior angle of a regular polygon is 6.5 times as large as each exterior angle. Find the number of sides.",
    "test/algebra/276.json": "Suppose 10x^2 - x - 24 factors as (Ax - 8)(Bx + 3) for integers A and B. Compute AB + B.",
    "test/prealgebra/996.json": "A math club meeting has 35 students. The count of girls is a multiple of 13 and exceeds the count of boys. How many boys attended?",
    "test/algebra/2779.json": "Write (√2 + √3)^3 as a√2 + b√3 + c√6 with integers a, b, c, and give a + b + c.",
    "test/precalculus/43.json": "At t = 2, which point does the curve (x, y) = (t^3 + 7, -3t^2 - 6t - 5) pass through?",
    "aime2024-II-10": "Triangle ABC has circumcenter O and incenter I such that line IA is perpendicular to line OI. The circumradius is 13 and the inradius is 6. Compute the product AB · AC.",
    "aime2024-II-02": "A list of positive integers sums to 30, has 9 as its unique mode, and its median is a positive integer not in the list. What is the sum of the squares of the list's entries?",
    "aime2024-I-01": "Aya walks 9 km every morning and then stops at a coffee shop. At s km/h the whole outing, coffee stop of t minutes included, takes 4 hours; at s+2 km/h it takes 2 hours 24 minutes, the same t minutes included. How many minutes does the outing take at s + 1/2 km/h, including the t minutes?",
}

SAME_TOPIC = [
    "Convert the polar point (4, π/3) to rectangular coordinates.",
    "In right triangle XYZ with the right angle at Z, cos X = 3/5. What is sin X?",
    "What is 7 divided by 3/4? Explain why dividing by a fraction is the same as multiplying by its reciprocal.",
    "Sam has 20 coins, all quarters and pennies, worth $2.36 in total. How many quarters does he have?",
    "How many ways are there to put 4 distinguishable balls into 3 distinguishable boxes?",
    "Find the sum of the interior angles of a convex octagon.",
    "Factor 6x^2 + 11x - 10 completely over the integers.",
    "A class has 28 students and there are 4 more boys than girls. How many girls are in the class?",
    "Expand (1 + √5)^2 and write it in the form a + b√5.",
    "A triangle has sides 13, 14 and 15. Find its inradius and its circumradius.",
    "A list of five positive integers has mean 6, median 5 and unique mode 3. What is the largest possible entry of the list?",
    "A cyclist rides 30 km at 15 km/h and then 30 km at 10 km/h. What is her average speed for the whole trip?",
    "Find the velocity vector of the curve (x, y) = (t^2, t^3) at t = 1.",
    "Find the eccentricity of the ellipse x^2/25 + y^2/9 = 1.",
    "How many positive divisors does 360 have?",
    "Find all real solutions of x^4 - 5x^2 + 4 = 0.",
    "What is the remainder when 2^100 is divided by 7?",
    "Compute the determinant of the matrix [[2, 1], [7, 4]].",
    "The hyperbola x^2/9 - y^2/16 = 1 has two foci. Find the distance between them.",
    "In how many ways can a committee of 3 be chosen from 10 people?",
    "A rhombus has diagonals of lengths 10 and 24. Find its perimeter.",
    "Find the number of ordered pairs of positive integers (a, b) with a + b = 30 and gcd(a, b) = 1.",
]
UNRELATED = [
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Explain the difference between TCP and UDP in two short paragraphs.",
    "Write a haiku about autumn rain without using the letter e.",
    "What are the main causes of the French Revolution?",
    "Give me a recipe for a vegetarian lasagna for four people.",
    "Summarize the plot of Romeo and Juliet in exactly three sentences.",
    "Implement binary search in C++ and explain its time complexity.",
    "How does photosynthesis convert light energy into chemical energy?",
]
TEMPLATE = "Solve the following problem step by step, explaining each step.\n\n{problem}\n\nPut your final answer in \\boxed{{}}."


@dataclass(frozen=True)
class Planted:
    text: str
    kind: str
    """formatting, edits, template, rewording, other_numbers (planted); same_topic, unrelated (clean)."""
    benchmark: str | None = None
    item_id: str | None = None


def _read(benchmarks_dir: Path, name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (benchmarks_dir / name / f"{name}.jsonl").open()]


def formatting(text: str) -> str:
    return re.sub(r"\s+", "  ", text.replace("$", "")).strip()


def other_numbers(text: str) -> str:
    return re.sub(r"\d", lambda m: str((int(m.group(0)) + 3) % 10), text)


def build(benchmarks_dir: Path, per_kind: int = 25, seed: int = 11,
          names: tuple[str, ...] = ("math500", "aime24", "aime25")) -> list[Planted]:
    rng = random.Random(seed)
    rows = {(name, r["id"]): r["problem"] for name in names for r in _read(benchmarks_dir, name)}
    keys = sorted(rows)
    planted: list[Planted] = []
    for kind, make in (("formatting", formatting), ("edits", lambda t: word_edits(t, rng, 0.05)),
                       ("template", lambda t: TEMPLATE.format(problem=t)), ("other_numbers", other_numbers)):
        for name, item_id in rng.sample(keys, per_kind):
            planted.append(Planted(make(rows[(name, item_id)]), kind, name, item_id))
    for item_id, text in REWORDINGS.items():
        name = "math500" if item_id.startswith("test/") else "aime24"
        if name in names:
            planted.append(Planted(text, "rewording", name, item_id))
    planted += [Planted(text, "same_topic") for text in SAME_TOPIC]
    planted += [Planted(text, "unrelated") for text in UNRELATED]
    return planted
