"""The math verifier on a labelled set written from real MATH-500 and AIME golds and realistic R1-style and
pipeline-format responses (tests/verify/data/math_pairs.jsonl, one `kind` per equivalence the issue lists),
and each rewrite of `math_forms` on its own. Accuracy per kind is printed by benchmarks/bench_verifiers.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distillery.schema.records import Reference, make_query
from distillery.verify.config import MathSettings
from distillery.verify.math import MathVerifier
from distillery.verify.math_forms import asks_for_approximation, decimal_literal, normalise_forms, units

PAIRS = Path(__file__).parent / "data" / "math_pairs.jsonl"
KINDS = {
    "answer_tag", "think_box", "inequality_interval", "matrix_tuple", "e_notation", "digit_separator",
    "repeating_decimal", "number_word", "imaginary_unit", "units", "decimal_approximation", "plain",
}


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PAIRS.open()]


@pytest.fixture(scope="module")
def verdicts() -> list[tuple[dict[str, Any], Any]]:
    rows = _rows()
    pairs = [(make_query("math", [{"role": "user", "content": row["question"]}], Reference(answer=row["gold"])), row["response"]) for row in rows]
    verifier = MathVerifier(MathSettings(workers=2), threshold=0.9)
    try:
        return list(zip(rows, verifier.verify_batch(pairs)))
    finally:
        verifier.close()


def test_labelled_set_covers_every_kind_with_both_labels(benchmarks_dir: Path) -> None:
    rows = _rows()
    assert len(rows) >= 150
    assert {row["kind"] for row in rows} == KINDS
    golds = {}
    for name in ("math500/math500.jsonl", "aime24/aime24.jsonl", "aime25/aime25.jsonl"):
        golds.update({item["id"]: item["answer"] for item in map(json.loads, (benchmarks_dir / name).open())})
    for row in rows:
        assert row["source"] == "written here" or golds[row["source"]] == row["gold"], row["source"]
    labels = Counter((row["kind"], row["label"]) for row in rows)
    assert all(labels[kind, True] and labels[kind, False] for kind in KINDS - {"decimal_approximation"}), labels


@pytest.mark.slow
def test_accuracy_on_the_labelled_set(verdicts: list[tuple[dict[str, Any], Any]]) -> None:
    wrong = [(row["kind"], row["gold"], row["response"][-80:], verdict.details) for row, verdict in verdicts if verdict.passed != row["label"]]
    false_accepts = [row for row, verdict in verdicts if verdict.passed and not row["label"]]
    assert 1 - len(wrong) / len(verdicts) >= 0.97, wrong
    assert len(false_accepts) <= 1, false_accepts


@pytest.mark.slow
def test_rejections_say_why(verdicts: list[tuple[dict[str, Any], Any]]) -> None:
    reasons: dict[str, list[str]] = {}
    for row, verdict in verdicts:
        if not row["label"] and not verdict.passed:
            reasons.setdefault(row["kind"], []).append(verdict.details.get("reason", ""))
    assert any(reason.startswith("different units") for reason in reasons["units"])
    assert any(reason.startswith("a decimal that is not the gold") for reason in reasons["decimal_approximation"])


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        (r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", "(-1/3, 2/3, 5/3)"),
        (r"\begin{bmatrix} 1 & 2 \end{bmatrix}", "(1, 2)"),
        (r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}"),
        ("1.5e6", r"1.5\times 10^{6}"),
        ("2.6E+04", r"2.6\times 10^{04}"),
        ("6.72e-5", r"6.72\times 10^{-5}"),
        ("2e-1", "2e-1"),
        (r"3 \cdot 10^4", r"3\times 10^4"),
        (r"11\,111\,111\,100", "11111111100"),
        ("10\u2009080", "10080"),
        (r"10,\!080", "10080"),
        (r"26\;000", "26000"),
        (r"0.\overline{3}", r"\frac{1}{3}"),
        (r"0.053\overline{571428}", r"\frac{3}{56}"),
        (r"4.\overline{6}", r"\frac{14}{3}"),
        ("0.1666...", r"\frac{1}{6}"),
        ("3.14159...", "3.14159..."),
        ("twenty-eight", "28"),
        (r"\text{nine}.", "9"),
        ("minus seven", "-7"),
        ("There are three such values.", "There are 3 such values."),
        (r"\text{Evelyn}", r"\text{Evelyn}"),
        (r"6 - 5\mathrm{i}", "6 - 5i"),
        (r"1 + 274\imath", "1 + 274i"),
        (r"1+2\sqrt{-1}", "1+2i"),
        ("1 - 12j", "1 - 12i"),
        ("x + j", "x + j"),
        (r"x \in [-2,7]", "[-2,7]"),
        (r"\langle -7, 16, 5 \rangle", "(-7, 16, 5)"),
        ("**14/3**", "14/3"),
        ("28 800", "28800"),
        ("2 3", "2 3"),
        ("6 - 5 i", "6 - 5i"),
    ],
)
def test_normalise_forms(written: str, normalised: str) -> None:
    assert normalise_forms(written) == normalised


def test_units_decimals_and_approximation_requests() -> None:
    assert units(r"864 \mbox{ inches}^2") == units("864 square inches") == {"inch"}
    assert units(r"5.4 \text{ cents}") == {"cent"} and units(r"\$18.90") == units("18.90 dollars") == {"dollar"}
    assert units(r"90^\circ") == units("90 degrees") == {"degree"}
    assert units("60 mph") == units("60 miles per hour") == {"mile", "hour"}
    assert units("5 m") == {"metre"} and units("5 m + 2") == frozenset() and units("m + n = 7") == frozenset()
    assert decimal_literal(r"$\approx 0.57735$") == "0.57735" and decimal_literal(r"\boxed{4.24\text{ cm}}") == "4.24"
    assert decimal_literal("0.5x") is None and decimal_literal(r"\frac{1}{3}") is None
    assert asks_for_approximation("Express your answer as a decimal to the nearest tenth.")
    assert not asks_for_approximation("Express your answer as a common fraction.")
