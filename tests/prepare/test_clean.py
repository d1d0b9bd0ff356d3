"""`clean`: Unicode repair, URL/image dependence, length limits and bad input, each drop with its reason."""

from __future__ import annotations

from pathlib import Path

from distillery.core.recipe import parse_recipe
from distillery.prepare.clean import CleanStage
from distillery.prepare.textclean import image_dependency, repair_unicode, url_dependency
from distillery.testing.prepare import items_of, query_context, query_record


def _stage(**config: object) -> CleanStage:
    recipe = parse_recipe({"name": "t", "run_dir": "/tmp/unused", "steps": {"clean": config}}, check_paths=False)
    stage = recipe.build_stage("clean")
    assert isinstance(stage, CleanStage)
    return stage


def test_unicode_is_nfkc_normalised_and_control_characters_go() -> None:
    text, removed = repair_unicode("ｆｕｌｌ\u00a0width ½\x00\x07 zero\u200bwidth\ufffd\r\nnext\ud800 line\ue000")
    assert text == "full width 1⁄2 zerowidth\nnext line"
    assert removed == 6
    emoji, removed = repair_unicode("family 👨\u200d👩\u200d👧 and tab\there")
    assert emoji == "family 👨\u200d👩\u200d👧 and tab\there" and removed == 0


def test_url_dependence_needs_a_reference_to_the_link() -> None:
    assert url_dependency('Write a 300+ word summary of the wikipedia page "https://en.wikipedia.org/wiki/X".')
    assert url_dependency("Summarize this article for me: https://example.com/news/123")
    assert url_dependency("https://example.com/puzzle.html")
    assert url_dependency("According to https://stats.example.org/table, what was the growth in 2020?")
    code = "Write a Python function that validates strings like 'https://example.com/a?b=1' and returns True for valid URLs."
    assert url_dependency(code) is None
    assert url_dependency("Find all real x with x^2 = 4.") is None


def test_image_dependence_unless_the_figure_is_in_the_text() -> None:
    assert image_dependency("In the figure below, find the area of the shaded region.")
    assert image_dependency("What is shown in the attached picture?")
    assert image_dependency("<image>\nWhat is the value of x?")
    assert image_dependency("Describe ![plot](plot.png) in detail.")
    asy = "In the diagram below, find x.\n[asy]\ndraw((0,0)--(1,1));\n[/asy]"
    assert image_dependency(asy) is None
    assert image_dependency("Draw a graph of y = x^2 and describe its shape.") is None
    assert image_dependency("How many edges does a complete graph on 5 vertices have?") is None


def test_every_drop_has_a_reason_and_counts_reconcile(tmp_path: Path) -> None:
    good = query_record("What is the smallest prime greater than 100?")
    cleaned = query_record("Ｗｈａｔ is 2\x00+2\u200b? Answer with a number.")
    records = [
        good,
        cleaned,
        query_record("   \x00\x01  "),
        query_record("x" * 1_000_000),
        query_record("x" * 40_000),
        query_record("2+2?"),
        query_record("Summarize this article: https://example.com/a"),
        query_record("In the figure below, what is the angle ABC?"),
        {**good, "id": "nonstring", "messages": [{"role": "user", "content": ["not", "a", "string"]}]},
        {**good, "id": "nouser", "messages": [{"role": "system", "content": "Be brief."}]},
        None,
    ]
    ctx = query_context(tmp_path, "clean")
    outcomes = list(_stage().process(items_of(records), ctx))
    assert len(outcomes) == len(records)
    by_position = {o.position: o for o in outcomes}
    assert [by_position[i].kind for i in range(len(records))] == [
        "kept", "kept", "rejected", "rejected", "rejected", "rejected", "rejected", "rejected",
        "quarantined", "quarantined", "quarantined"]
    reasons = [by_position[i].reason.split(":")[0] for i in range(2, len(records))]
    assert reasons == ["empty", "too_long", "too_long", "too_short", "url_dependent", "image_dependent",
                       "invalid query", "invalid query", "unreadable input"]
    assert by_position[1].record["messages"][0]["content"] == "What is 2+2? Answer with a number."
    assert by_position[1].record["id"] == cleaned["id"]
    assert "content" in by_position[8].reason
    assert ctx.stats["drop_reasons"] == {"empty": 1, "image_dependent": 1, "invalid query": 2, "too_long": 2,
                                         "too_short": 1, "unreadable input": 1, "url_dependent": 1}


def test_filters_can_be_switched_off(tmp_path: Path) -> None:
    records = [query_record("Summarize this article: https://example.com/a"), query_record("See the image above. What is it?")]
    outcomes = list(_stage(drop_url_dependent=False, drop_image_dependent=False).process(items_of(records), query_context(tmp_path, "clean")))
    assert [o.kind for o in outcomes] == ["kept", "kept"]
