"""The decision for one (query, benchmark item) candidate: which rule fires, in order, on that item's own evidence.

1. `ngram` / `embedding`: a shared content n-gram (boilerplate left out), or a cosine at or above `threshold`. If the
   item's numbers are mostly absent from the query (`numbers` below `template_share`), the query is the item's
   wording with other numbers: the finding is `template_reuse`, not `contaminated`.
2. `fingerprint`: the query carries the item's content (numbers, expressions, names) in other words, a paraphrase
   or a translation: share of the item's fingerprint >= `fingerprint_share`, share of the query's own fingerprint
   in the item >= `fingerprint_reverse` (a long text that happens to contain the numbers is not a copy), and
   enough evidence: either the shared tokens weigh at least `fingerprint_info` with three or more rare tokens (not
   variable names) among them (content alone suffices, even across languages the encoder does not know), or two
   when the item is also among the query's nearest by embedding (two numbers a fresh problem shares with one of
   a thousand items are a coincidence: `54` and `6`, `20` and `30`), or half that weight with the meaning agreeing
   too (an item with only common numbers): a cosine of at least `fingerprint_cosine`, or the item is the query's
   nearest at a cosine of at least `fingerprint_nearest` and the two fingerprints are the same, two tokens or more
   (a translation sits further from its item than a fresh problem in the item's own language does, yet nearest to
   it, with its numbers and no others; a fresh problem on the item's topic is nearest too, but changes some or
   brings its own: `7 divided by 3/4` beside `three plus ... equals 7 divided by that number`; and one number is no
   identity: `fewer than 20 words` beside IFEval's `at least 20 sentences`).
3. `judge`: none of the above but a cosine at or above `grey_threshold`, numbers not contradicting: the LLM judge
   decides. Every such candidate of a query goes to the judge, not only its nearest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from distillery.prepare.contamination import Candidate

Finding = Literal["contaminated", "template_reuse", "grey"]


@dataclass(frozen=True)
class Rules:
    threshold: float
    grey_threshold: float | None
    fingerprint_share: float
    fingerprint_reverse: float
    fingerprint_info: float
    fingerprint_cosine: float
    fingerprint_nearest: float
    template_share: float


def numbers_differ(candidate: Candidate, rules: Rules) -> bool:
    return not math.isnan(candidate.numbers) and candidate.numbers < rules.template_share


def classify(candidate: Candidate, rules: Rules) -> tuple[str, Finding] | None:
    """(rule, finding) for the first rule that fires, or None when the pair is no evidence of contamination."""
    differ = numbers_differ(candidate, rules)
    if candidate.ngram_count or candidate.similarity >= rules.threshold:
        rule = "ngram" if candidate.ngram_count else "embedding"
        return rule, "template_reuse" if differ else "contaminated"
    if differ:
        return None
    share = max(candidate.content, 0.0 if math.isnan(candidate.numbers) else candidate.numbers)
    agrees = candidate.similarity >= rules.fingerprint_cosine or (
        candidate.rank == 0 and candidate.similarity >= rules.fingerprint_nearest
        and candidate.content >= 1.0 and candidate.reverse >= 1.0 and candidate.shared >= 2)
    if share >= rules.fingerprint_share and candidate.reverse >= rules.fingerprint_reverse and (
            (candidate.info >= rules.fingerprint_info and candidate.rare >= (3 if candidate.rank is None else 2))
            or (candidate.info >= rules.fingerprint_info / 2 and agrees)):
        return "fingerprint", "contaminated"
    if rules.grey_threshold is not None and candidate.similarity >= rules.grey_threshold:
        return "judge", "grey"
    return None


def findings_by_query(found: Iterable[Candidate], rules: Rules) -> dict[Finding, dict[int, set[int]]]:
    """Finding -> query index -> the benchmark items it was found against: what the rules decide for a list of
    candidates, grouped the way a recall table counts them."""
    table: dict[Finding, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for candidate in found:
        decision = classify(candidate, rules)
        if decision is not None:
            table[decision[1]][candidate.query_index].add(candidate.item_index)
    return table
