"""The three filters and the report through the real runner (journal, scan markers, merge, manifests).

Generation is not run here: its output shards and manifests are written as the generate step leaves them
(kept accepted traces, rejected ones that never passed), so the filters run on exactly that layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillery.analyze.report import build_report
from distillery.core.runner import run_task
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.testing import finish_shard, make_trace

LOOP = "the same filler sentence goes round and round again"


def _responses(teacher: str) -> list[tuple[str, str, bool]]:
    """(prompt, response, accepted): plain answers, a looping one, a malformed one, an unaccepted one."""
    rows = [(f"{teacher}: what is {i} + {i}?", f"<think>Adding {i} to itself gives {2 * i}.</think><answer>{2 * i}</answer>", True)
            for i in range(5)]
    rows.append((f"{teacher}: explain loops", "<think>" + " ".join([LOOP] * 3) + "</think><answer>loop</answer>", True))
    rows.append((f"{teacher}: broken", "<think>I never close my thoughts", True))
    rows.append((f"{teacher}: too hard", "<think>?</think><answer>?</answer>", False))
    return rows


def test_filters_and_report_through_the_runner(tmp_path: Path, smollm2_dir: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    teachers = ["alpha", "beta"]
    recipe = {
        "name": "filters-pipeline", "run_dir": str(run.root), "num_shards": 2,
        "teachers": [{"name": name, "model": "smollm2", "backend": "replay"} for name in teachers],
        "steps": {
            "generate": {},
            "perplexity": {"model": str(smollm2_dir), "device": "cpu", "max_ppl": 1e6},
            "ngram": {"n": 6, "limit": 2},
            "structure": {"tokenizer": str(smollm2_dir)},
        },
    }
    run.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    for teacher in teachers:
        traces = [make_trace(p, r, teacher=teacher, accepted=ok) for p, r, ok in _responses(teacher)]
        for shard in range(2):
            mine = traces[shard::2]
            kept = [t for t in mine if t.accepted is not None]
            finish_shard(run, "generate", teacher, shard, (t.model_dump(mode="json") for t in kept),
                         ((t.model_dump(mode="json"), "no attempt reached 0.9 after 1 attempts")
                          for t in mine if t.accepted is None), num_shards=2)
    for teacher in teachers:
        for step in ("perplexity", "ngram", "structure"):
            for shard in range(2):
                run_task(str(run.root), step, teacher, "scan", shard)
            run_task(str(run.root), step, teacher, "merge", 0)
            for shard in range(2):
                run_task(str(run.root), step, teacher, "process", shard)

    for teacher in teachers:
        manifests = {step: [Manifest.load(run.shard(step, teacher, s).manifest) for s in range(2)]
                     for step in ("perplexity", "ngram", "structure")}
        assert all(m.reconciles() for ms in manifests.values() for m in ms)
        assert sum(m.inputs for m in manifests["perplexity"]) == 7 and sum(m.kept for m in manifests["perplexity"]) == 7
        assert sum(m.rejected for m in manifests["ngram"]) == 1
        assert any(LOOP.split()[0] in " ".join(m.stats.get("offending_ngrams", {})) for m in manifests["ngram"])
        assert sum(m.kept for m in manifests["structure"]) == 5
        final = [r for s in range(2) for r in iter_jsonl(run.shard("structure", teacher, s).output)]
        assert all(r["ppl"] > 1 and r["metadata"]["student_tokens"] > 0 for r in final), "ppl and token counts carried forward"

    page = build_report(run.root)
    numbers = json.loads((page.parent / "report.json").read_text())
    assert numbers["steps"] == {"generation": "generate", "perplexity": "perplexity", "final": "structure"}
    for teacher in teachers:
        assert numbers["teachers"][teacher]["lengths"]["count"] == 5
        assert numbers["teachers"][teacher]["perplexity"]["count"] == 7
        assert numbers["teachers"][teacher]["categories"]["math"] == {"queries": 8, "accepted": 7, "attempts": 8}
    text = page.read_text()
    assert "<th>alpha</th><th>beta</th>" in text and "malformed structure" in text
