"""Verifier accuracy on the labelled sets in tests/verify/data: accuracy, false accepts and false rejects per kind.

Math: `MathVerifier` (worker pool, form rewrites, units and decimal rules) on math_pairs.jsonl, against a
baseline measured in the same run: Math-Verify alone, in this process, on the answer the old default
sources found (the last box of the answer part, else "the answer is X"; never the <answer> tag), gold boxed.
Multiple choice: `ChoiceVerifier` on choice_responses.jsonl, against the same old default sources with the
found text compared to the reference letter (what a gold-answer check without a letter reader does).
Targets (issue 13): math accuracy >= 97% with at most 1 false accept.
The times are a side note: the pool's fresh workers start with cold Math-Verify parser caches (each set item
is a new expression), and on a loaded machine two workers get no second core; compare the same run only.

    python benchmarks/bench_verifiers.py [--data tests/verify/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from distillery.schema.records import Query, Reference, make_query
from distillery.schema.responses import extract_final_answer
from distillery.verify.choice import ChoiceVerifier
from distillery.verify.config import MathSettings
from distillery.verify.math import MathVerifier, gold_text

logger = logging.getLogger("bench_verifiers")
DATA = Path(__file__).resolve().parents[1] / "tests" / "verify" / "data"
OLD_SOURCES = ["boxed", "answer_is"]


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open()]


def baseline_math(rows: list[dict[str, Any]]) -> list[bool]:
    """Math-Verify alone on the answer the old default sources find."""
    from math_verify import parse, verify

    decisions = []
    for row in rows:
        found = extract_final_answer(row["response"], OLD_SOURCES)
        if found is None:
            decisions.append(False)
            continue
        prediction = f"\\boxed{{{found}}}" if "\\boxed" in row["response"].rsplit("</think>", 1)[-1] else f"${found}$"
        decisions.append(bool(verify(parse(gold_text(row["gold"])), parse(prediction))))
    return decisions


def baseline_choice(rows: list[dict[str, Any]]) -> list[bool]:
    """The old default sources' answer, stripped of markup, compared to the reference letter."""
    decisions = []
    for row in rows:
        found = extract_final_answer(row["response"], OLD_SOURCES) or ""
        decisions.append(re.sub(r"[^A-Za-z]|text", "", found) == row["reference"])
    return decisions


def report(title: str, rows: list[dict[str, Any]], decisions: list[bool]) -> None:
    """Accuracy, false accepts and false rejects per kind, then overall."""
    by_kind: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for row, decision in zip(rows, decisions):
        by_kind[row["kind"]].append((row["label"], decision))
    print(f"\n{title}")
    print(f"  {'kind':<24}{'pairs':>6}{'accuracy':>10}{'false acc.':>12}{'false rej.':>12}")
    for kind in sorted(by_kind) + ["ALL"]:
        items = [item for values in by_kind.values() for item in values] if kind == "ALL" else by_kind[kind]
        right = sum(label == decision for label, decision in items)
        accepts = sum(decision and not label for label, decision in items)
        rejects = sum(label and not decision for label, decision in items)
        print(f"  {kind:<24}{len(items):>6}{100 * right / len(items):>9.1f}%{accepts:>12}{rejects:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    math_rows = load(args.data / "math_pairs.jsonl")
    started = time.perf_counter()
    baseline = baseline_math(math_rows)
    baseline_s = time.perf_counter() - started
    queries: list[tuple[Query, str]] = [
        (make_query("math", [{"role": "user", "content": row["question"]}], Reference(answer=row["gold"])), row["response"])
        for row in math_rows
    ]
    verifier = MathVerifier(MathSettings(workers=args.workers), threshold=0.9)
    try:
        verifier.verify_batch(queries[:4])  # start the workers
        started = time.perf_counter()
        verdicts = verifier.verify_batch(queries)
        verifier_s = time.perf_counter() - started
    finally:
        verifier.close()
    report("Math-Verify alone, old answer sources [baseline]", math_rows, baseline)
    report(f"MathVerifier ({args.workers} workers)", math_rows, [verdict.passed for verdict in verdicts])
    print(f"  time: baseline {baseline_s:.2f} s in-process, verifier {verifier_s:.2f} s "
          f"({baseline_s / verifier_s:.2f}x the baseline's speed)")

    choice_rows = load(args.data / "choice_responses.jsonl")
    choice = ChoiceVerifier(threshold=0.9)
    choice_verdicts = [
        choice.verify(make_query("science", [{"role": "user", "content": row["question"]}], Reference(answer=row["reference"])), row["response"])
        for row in choice_rows
    ]
    report("Old answer sources against the letter [baseline]", choice_rows, baseline_choice(choice_rows))
    report("ChoiceVerifier", choice_rows, [verdict.passed for verdict in choice_verdicts])


if __name__ == "__main__":
    main()
