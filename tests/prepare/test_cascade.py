"""The cascade's rule order on one candidate's evidence (the evidence itself comes from real texts elsewhere)."""

from __future__ import annotations

import math

from distillery.prepare.cascade import classify
from distillery.prepare.contamination import Candidate
from distillery.prepare.decontaminate import DecontaminateConfig

RULES = DecontaminateConfig(grey_threshold=0.75, judge={"model": "unused"}).rules()


def _pair(**evidence: float | str) -> Candidate:
    return Candidate(query_index=0, item_index=0, **{"similarity": 0.5, **evidence})  # type: ignore[arg-type]


def test_wording_matches_are_copies_unless_the_numbers_differ() -> None:
    assert classify(_pair(ngram="a b c", ngram_count=3, numbers=1.0), RULES) == ("ngram", "contaminated")
    assert classify(_pair(similarity=0.95, numbers=math.nan), RULES) == ("embedding", "contaminated")
    assert classify(_pair(ngram="a b c", ngram_count=3, numbers=0.2), RULES) == ("ngram", "template_reuse")
    assert classify(_pair(similarity=0.97, numbers=0.4), RULES) == ("embedding", "template_reuse")


def test_content_in_other_words_needs_enough_rare_evidence_or_agreeing_meaning() -> None:
    strong = {"numbers": 1.0, "content": 0.9, "reverse": 0.9, "info": 30.0, "rare": 3}
    assert classify(_pair(similarity=0.3, **strong), RULES) == ("fingerprint", "contaminated")
    assert classify(_pair(similarity=0.3, **{**strong, "rare": 1}), RULES) is None
    weak = {**strong, "rare": 1, "info": 7.0}
    assert classify(_pair(similarity=RULES.fingerprint_cosine, **weak), RULES) == ("fingerprint", "contaminated")
    assert classify(_pair(similarity=RULES.grey_threshold - 0.01, **weak), RULES) is None
    assert classify(_pair(similarity=0.3, **{**strong, "reverse": 0.2}), RULES) is None, "a long text holding numbers"


def test_two_shared_numbers_need_the_embedder_to_agree_and_a_nearest_translation_needs_less_cosine() -> None:
    two = {"numbers": 1.0, "content": 1.0, "reverse": 1.0, "info": 14.7, "rare": 2}
    assert classify(_pair(similarity=0.3, rank=None, **two), RULES) is None, \
        "a fresh problem sharing 54 and 6 with an item FAISS did not propose: a coincidence"
    assert classify(_pair(similarity=0.3, rank=4, **two), RULES) == ("fingerprint", "contaminated")
    common = {**two, "rare": 1, "info": 7.0, "shared": 3}
    below = RULES.fingerprint_cosine - 0.01
    assert below >= RULES.fingerprint_nearest
    assert classify(_pair(similarity=below, rank=0, **common), RULES) == ("fingerprint", "contaminated"), \
        "a translation nearest its item, all numbers shared, below the cosine of same-language neighbours"
    assert classify(_pair(similarity=below, rank=1, **common), RULES) != ("fingerprint", "contaminated")
    assert classify(_pair(similarity=below, rank=0, **{**common, "content": 0.64}), RULES) != (
        "fingerprint", "contaminated"), "a fresh problem in its nearest item's template changes part of its content"
    assert classify(_pair(similarity=below, rank=0, **{**common, "reverse": 0.69}), RULES) != (
        "fingerprint", "contaminated"), "a fresh problem on its nearest item's topic brings numbers of its own"
    assert classify(_pair(similarity=RULES.fingerprint_nearest - 0.01, rank=0, **common), RULES) is None
    assert classify(_pair(similarity=0.548, rank=0, **{**common, "rare": 1, "info": 6.85, "shared": 1}), RULES) is None, \
        "one shared number is no identity: 'fewer than 20 words' nearest to IFEval's 'at least 20 sentences'"


def test_grey_zone_goes_to_the_judge_only_when_the_numbers_do_not_contradict() -> None:
    assert classify(_pair(similarity=0.8, numbers=math.nan), RULES) == ("judge", "grey")
    assert classify(_pair(similarity=0.8, numbers=0.1), RULES) is None
    assert classify(_pair(similarity=0.7, numbers=math.nan), RULES) is None
