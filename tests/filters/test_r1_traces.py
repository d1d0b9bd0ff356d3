"""Released traces in DeepSeek-R1's layout, end to end: import, replay with fresh verdicts, normalise, perplexity
with the real SmolLM2 reference model, structure, AM export and re-import.

`data/r1_traces.am.jsonl` follows the row structure of AM-Thinking-v1-Distilled (`system`, `conversations[{from,
value, info{source, category, ground_truth, ..., verify_score, model_name, ppl}}]`) with R1's answer layout, as in
open-r1/OpenR1-Math-220k: `<think>\\n...\\n</think>\\n\\n` and a plain answer, no `<answer>` tag. One row lacks the
opening `<think>` (R1 behind its updated chat template), one already has answer tags, one has a wrong answer its
stored score calls right, one was cut off inside the think block; one is a multiple-choice science question. The same traces are also imported as an
OpenAI-messages file, whose assistant turn must become the response, not part of the query.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from distillery.analyze.collect import collect
from distillery.analyze.report import length_rows
from distillery.cli import main
from distillery.schema.formats import DISTILLERY_FIELDS, am_from_trace, query_from_am
from distillery.schema.records import Trace
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.filters.structure import check_structure
from distillery.generate.normalise import ADDED_THINK_OPEN, WRAPPED_ANSWER
from distillery.generate.prompts import build_conversation
from distillery.models import load_tokenizer

pytestmark = pytest.mark.slow

AM_FILE = Path(__file__).parent / "data" / "r1_traces.am.jsonl"
ROWS = [json.loads(line) for line in AM_FILE.read_text(encoding="utf-8").splitlines()]
WRONG, CUT_OFF = "What is $7 \\times 8$?", "Compute $\\sum_{k=1}^{100} k^2$."
TAGGED, NO_OPENING = "What is 15% of 80?", "What is the greatest common divisor of 48 and 180?"


def _question(row: dict) -> str:
    return row["conversations"][0]["value"]


def _as_messages(row: dict) -> dict:
    question, answer = row["conversations"][0], row["conversations"][-1]
    return {"messages": [{"role": "user", "content": question["value"]}, {"role": "assistant", "content": answer["value"]}],
            "category": question["info"]["category"], "reference": {"answer": question["info"]["ground_truth"]},
            "source": question["info"]["source"]}


def _run(tmp: Path, name: str, traces_file: Path, fmt: str, num_shards: int) -> Path:
    recipe = {
        "name": name, "run_dir": str(tmp / name), "num_shards": num_shards,
        "teachers": [{"name": "r1", "model": str(traces_file), "backend": "replay"}],
        "steps": {
            "ingest": {"inputs": [{"path": str(traces_file), "format": fmt}]},
            "generate": {"max_attempts": 1, "batch_size": 4,
                         "verify": {"math": {"workers": 1}}},
            "normalise": {"layouts": {"r1": "r1"}},
            "perplexity": {"model": "smollm2", "device": "cpu"},
            "structure": {},
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["run", str(path)]) == 0
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("r1")
    messages_file = tmp / "r1_traces.messages.jsonl"
    messages_file.write_text("".join(json.dumps(_as_messages(row)) + "\n" for row in ROWS))
    return {"am": _run(tmp, "am", AM_FILE, "am", num_shards=2),
            "messages": _run(tmp, "messages", messages_file, "messages", num_shards=1)}


def _kept(run_dir: Path, step: str) -> dict[str, Trace]:
    shards = sorted((RunDir(run_dir).stage_dir(step, "r1")).glob("shard-*.jsonl"))
    traces = [Trace.model_validate(r) for path in shards for r in iter_jsonl(path)]
    return {t.query.prompt: t for t in traces}


def _export(run_dir: Path, step: str, tmp: Path) -> dict[str, dict]:
    out = tmp / f"{run_dir.name}-{step}.am.jsonl"
    assert main(["export", str(run_dir), "--step", step, "--teacher", "r1", "--format", "am", "-o", str(out)]) == 0
    return {_question(row): row for row in iter_jsonl(out)}


def test_every_answered_trace_is_normalised_and_survives_structure(runs: dict[str, Path]) -> None:
    generated, final = _kept(runs["am"], "generate"), _kept(runs["am"], "structure")
    assert set(generated) == {_question(r) for r in ROWS} - {WRONG, CUT_OFF}, "fresh verdicts reject the wrong and the cut-off one"
    assert set(final) == set(generated), "the default structure filter keeps every normalised R1 trace"
    as_written = [q for q, t in final.items() if not isinstance(check_structure(t.verdict.original_response), str)]
    assert as_written == [TAGGED], "as R1 wrote them, it would have kept only the one with answer tags"
    originals = {_question(r): r["conversations"][-1]["value"] for r in ROWS}
    for question, trace in final.items():
        attempt = trace.verdict
        assert attempt is not None and attempt.original_response == originals[question]
        assert trace.response.startswith("<think>\n") and trace.response.rstrip().endswith("</answer>")
        assert trace.metadata["layout"] == "tagged" and trace.metadata["normalised"]["layout"] == "r1"
        if question == TAGGED:
            assert trace.response == originals[question] and trace.metadata["normalised"]["changes"] == []
            assert "normalised" not in attempt.details
        else:
            expected = [ADDED_THINK_OPEN, WRAPPED_ANSWER] if question == NO_OPENING else [WRAPPED_ANSWER]
            assert trace.metadata["normalised"]["changes"] == expected
            assert attempt.details["normalised"]["original"] == originals[question]
            released_answer = next(r for r in ROWS if _question(r) == question)["conversations"][-1]["info"]["answer_content"]
            assert trace.answer == released_answer and f"<answer>\n{released_answer}\n</answer>" in trace.response
    manifests = [Manifest.load(RunDir(runs["am"]).shard("normalise", "r1", s).manifest) for s in range(2)]
    assert sum(m.stats["normalise"].get("changed", 0) for m in manifests) == len(final) - 1
    assert sum(m.stats["normalise"].get(ADDED_THINK_OPEN, 0) for m in manifests) == 1


def test_replay_counts_tokens_with_the_students_tokenizer(runs: dict[str, Path]) -> None:
    tokenizer = load_tokenizer("smollm2")
    for trace in _kept(runs["am"], "generate").values():
        expected = len(tokenizer(trace.verdict.original_response, add_special_tokens=False)["input_ids"])
        assert trace.response_tokens == trace.verdict.completion_tokens == expected > 0
        assert trace.metadata["tokens_counted_with"] == "smollm2"
    manifest = Manifest.load(RunDir(runs["am"]).shard("generate", "r1", 0).manifest)
    assert manifest.stats["tokens_counted_with"] == "smollm2" and manifest.stats["completion_tokens"] > 0
    teacher = collect(runs["am"]).teachers["r1"]
    assert teacher.final_lengths == [t.response_tokens for t in _kept(runs["am"], "structure").values()]
    assert min(teacher.final_lengths) > 0 and teacher.counted_with == ["smollm2"]
    assert ("tokens counted with", ["smollm2"]) in length_rows([teacher])


def test_messages_import_keeps_the_answer_out_of_the_query(runs: dict[str, Path]) -> None:
    """Structure's count and perplexity's context hold the answer once: both runs give the same numbers."""
    am, messages = _kept(runs["am"], "structure"), _kept(runs["messages"], "structure")
    assert set(am) == set(messages)
    tokenizer = load_tokenizer("smollm2")
    for question, trace in messages.items():
        assert [m.role for m in trace.query.messages] == ["user"]
        assert all(turn["role"] != "assistant" for turn in build_conversation(trace.query, None)), "never sent the answer"
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": trace.response}]
        templated = tokenizer.apply_chat_template(conversation, tokenize=False)
        assert trace.metadata["student_tokens"] == len(tokenizer(templated, add_special_tokens=False)["input_ids"])
        assert trace.query.id == am[question].query.id and trace.response == am[question].response
        assert trace.metadata["student_tokens"] == am[question].metadata["student_tokens"]
        assert trace.ppl == pytest.approx(am[question].ppl, rel=1e-6)
        assert trace.ppl > 3.0, "measured: 3.7-11.6 here, 1.3-2.3 with the answer already in the context"


def test_am_export_keeps_every_imported_field_and_adds_ours_beside_them(runs: dict[str, Path], tmp_path: Path) -> None:
    before_ppl, after_ppl = _export(runs["am"], "generate", tmp_path), _export(runs["am"], "structure", tmp_path)
    final = _kept(runs["am"], "structure")
    rows = {_question(r): r for r in ROWS}
    assert set(after_ppl) == set(final)
    for question, exported in after_ppl.items():
        ours = exported["conversations"][-1].pop(DISTILLERY_FIELDS)
        assert exported == rows[question], "every imported field survives, values and types as they came in"
        trace = final[question]
        assert ours["model_name"] == "r1" and ours["verify_score"] == trace.verdict.score == 1.0
        assert ours["verifier"] == trace.verdict.verifier != "released"
        assert ours["ppl"] == trace.ppl and ours["ppl_model"] == "smollm2"
        assert ours["ppl"] != rows[question]["conversations"][-1]["info"]["ppl"]
        assert ours.get("value", exported["conversations"][-1]["value"]) == trace.response
        assert ("value" in ours) == (question != TAGGED)
        assert ours["normalised"] == trace.metadata["normalised"]
        # Which verify_score sits where does not depend on whether perplexity ran.
        early = copy.deepcopy(before_ppl[question])
        early_ours = early["conversations"][-1].pop(DISTILLERY_FIELDS)
        assert early == rows[question] and "ppl" not in early_ours
        assert early_ours["verify_score"] == ours["verify_score"]


def test_exported_am_reimports_to_the_same_traces(runs: dict[str, Path], tmp_path: Path) -> None:
    exported = _export(runs["am"], "structure", tmp_path)
    for question, trace in _kept(runs["am"], "structure").items():
        row = exported[question]
        query, reimported = query_from_am(copy.deepcopy(row))
        original = next(r for r in ROWS if _question(r) == question)
        assert query.id == trace.query.id and query.reference.answer == original["conversations"][0]["info"]["ground_truth"]
        assert [m.role for m in query.messages] == ["user"], "the answer is the trace, not part of the query"
        assert reimported is not None and reimported.response == original["conversations"][-1]["value"]
        assert reimported.teacher == "DeepSeek-R1" and reimported.ppl == original["conversations"][-1]["info"]["ppl"]
        assert am_from_trace(reimported) == row, "a second round trip changes nothing"
