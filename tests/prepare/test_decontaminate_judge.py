"""The grey-zone second check, with the real SmolLM2 judge and, for the wiring, a scripted stand-in judge.

No judge strong enough to tell rewordings from same-topic problems runs on this machine (SmolLM2-135M answers "no"
to nearly everything): the real-judge test checks that every grey-zone pair is judged and audited and that only
"same" verdicts drop, and prints what it recovered. The stand-in answers from a fixed script, standing in for a
competent judge, to test that a "same" verdict drops the query and is audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery.core.recipe import parse_recipe
from distillery.core.store import read_json
from distillery.llm.protocol import (
    Completion,
    Conversation,
    Sampling,
)
from distillery.prepare import decontaminate
from distillery.testing import planted
from distillery.testing.prepare import (
    decontaminate_step,
    items_of,
    kept_ids,
    math_query_id,
    query_context,
    query_record,
    query_row,
    read_audit,
    run_recipe,
    write_rows,
)


@pytest.mark.slow
def test_real_judge_sees_every_grey_pair_and_only_same_verdicts_drop(
        tmp_path: Path, benchmarks_dir: Path, embed_cache: Path, smollm2_dir: Path) -> None:  # noqa: F811
    texts = list(planted.REWORDINGS.values()) + planted.SAME_TOPIC
    inputs = write_rows(tmp_path / "queries.jsonl", (query_row(t) for t in texts))
    config = decontaminate_step(benchmarks_dir, embed_cache, grey_threshold=0.75, judge={"model": str(smollm2_dir), "max_chars": 800})
    run = run_recipe(tmp_path, "judged", inputs, {"decontaminate": config}, num_shards=1)
    audit = read_audit(run)
    judged = [r for r in audit if r["rule"] == "judge"]
    assert judged, "no pair fell in the grey zone"
    assert all(0.75 <= r["similarity"] < 0.9 and r["judge_verdict"] in ("same", "different", "unclear") for r in judged)
    assert all(r["judge_reply"] for r in judged)
    assert all(r["dropped"] == (r["judge_verdict"] == "same") for r in judged)
    sure = {r["query_id"] for r in audit if r["rule"] != "judge" and r["dropped"]}
    assert not sure & {r["query_id"] for r in judged}, "a query already dropped was sent to the judge"
    kept = set(kept_ids(run, "decontaminate"))
    assert kept == {math_query_id(t) for t in texts} - sure - {r["query_id"] for r in judged if r["dropped"]}
    rewordings = {math_query_id(t) for t in planted.REWORDINGS.values()}
    print(f"\ngrey zone [0.75, 0.9): {sum(r['query_id'] in rewordings for r in judged)} rewordings and "
          f"{sum(r['query_id'] not in rewordings for r in judged)} clean same-topic queries judged; SmolLM2 said same for "
          f"{sum(r['dropped'] and r['query_id'] in rewordings for r in judged)} rewordings and "
          f"{sum(r['dropped'] and r['query_id'] not in rewordings for r in judged)} clean queries; replies "
          f"{sorted({r['judge_reply'] for r in judged})}")
    summary = read_json(run.stage_dir("decontaminate") / "summary.json")
    assert sum(sum(b["judge_verdicts"].values()) for b in summary["benchmarks"].values()) == len(judged)


class ScriptedJudge:
    """Stand-in for a competent judge (none runs here): yes exactly when problem A mentions `marker` and problem B
    mentions `source`."""

    name = "scripted"

    def __init__(self, marker: str, source: str) -> None:
        self.marker, self.source = marker, source
        self.seen: list[tuple[str, str]] = []

    def chat(self, conversations: list[Conversation], sampling: Sampling, seeds: list[int] | None = None) -> list[Completion]:
        pairs = [tuple(c[-1]["content"].split("Problem A:")[1].split("Problem B:")) for c in conversations]
        self.seen += pairs
        return [Completion("Yes." if self.marker in a and self.source in b else "No.") for a, b in pairs]

    def close(self) -> None:
        pass


def test_same_verdict_drops_and_bad_records_are_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = tmp_path / "tiny.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "t1", "problem": "Find the number of positive divisors of 2024 that are perfect squares."},
        {"id": "t2", "problem": "Write a function that reverses the words of a sentence in place."},
        {"id": "t3", "problem": "Find the number of positive divisors of 2025 that are perfect squares or cubes."}]))
    judge = ScriptedJudge("square divisors", "2024")
    monkeypatch.setattr(decontaminate, "build_judge", lambda config: judge)
    body: dict[str, Any] = {"benchmarks": [{"name": "tiny", "file": str(bench), "text_field": "problem"}], "device": "cpu",
                            "grey_threshold": 0.5, "judge": {"model": "unused"}}
    recipe = parse_recipe({"name": "t", "run_dir": str(tmp_path / "run"), "steps": {"decontaminate": body}}, check_paths=False)
    stage = recipe.build_stage("decontaminate")
    records: list[dict[str, Any] | None] = [
        query_record("How many square divisors does 2024 have? Count the positive ones."),
        query_record("How many positive divisors of 2024 are prime numbers?"),
        query_record("Find the number of positive divisors of 2024 that are perfect squares."),
        query_record("Describe the water cycle."),
        None,
        {"id": "broken", "category": "math", "messages": "not a list"},
        {**query_record("unused"), "id": "system-only", "messages": [{"role": "system", "content": "Be brief."}]},
    ]
    ctx = query_context(tmp_path, "decontaminate")
    ctx.global_dir.mkdir(parents=True)
    stage.scan(items_of(records), ctx)
    stage.merge(ctx)
    outcomes = {o.position: o for o in stage.process(items_of(records), ctx)}
    assert [outcomes[i].kind for i in range(len(records))] == ["rejected", "kept", "rejected", "kept", "quarantined", "quarantined",
                                                             "quarantined"]
    assert "by judge" in outcomes[0].reason
    assert "by ngram (1 shared runs of content words, first 'find the number of positive divisors of 2024 that are " \
           "perfect squares')" in outcomes[2].reason, "a short item quoted whole is one content n-gram"
    asked = [a for a, _ in judge.seen]
    assert sum("square divisors" in a for a in asked) == 2, "every grey candidate of a query is judged, not only the nearest"
    assert len(asked) == 4, "the exact copy must not reach the judge, the unrelated query must not either"
    audit = [json.loads(line) for line in (ctx.run.stage_dir("decontaminate") / "audit.jsonl").open()]
    verdicts = {(r["query_id"], r["item_id"]): (r["rule"], r["judge_verdict"], r["dropped"]) for r in audit}
    assert verdicts[(records[0]["id"], "t1")] == ("judge", "same", True)  # type: ignore[index]
    assert verdicts[(records[0]["id"], "t3")] == ("judge", "different", False)  # type: ignore[index]
    assert verdicts[(records[1]["id"], "t1")] == ("judge", "different", False)  # type: ignore[index]
    assert "t1 by judge" in outcomes[0].reason


def test_the_cluster_recipe_sends_its_grey_zone_to_an_instruction_model(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from distillery.core.recipe import load_recipe

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DISTILLERY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISTILLERY_DATA", str(tmp_path / "data"))
    config = load_recipe(repo / "jobs" / "am-thinking-distill.yaml", check_paths=False).step("decontaminate").config
    assert config.judge is not None and config.grey_threshold is not None
    assert config.grey_threshold < config.threshold and "Instruct" in config.judge.model
    assert config.judge.device == "cuda", "a 7B judge on a cluster runs on the step's GPU"
