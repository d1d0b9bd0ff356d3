"""A stored trace holds its reasoning once: a real DeepSeek-R1 row (tests/filters/data), its reasoning lengthened to
thousands of tokens, imported, answered by a replay teacher serving the same file, normalised; the stored line
must hold the text once, read back equal, and export the row it came from. Lines stored before (every copy
written out) still load."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.generate.loop import final_trace, make_attempt
from distillery.generate.normalise import normalise_trace
from distillery.llm.protocol import Completion
from distillery.schema.formats import am_from_trace, query_from_am
from distillery.schema.records import Trace
from distillery.schema.stored_once import STORED_ONCE, rebuild, splice_of

R1_ROWS = Path(__file__).parents[1] / "filters" / "data" / "r1_traces.am.jsonl"


def _long_r1_row(repeat: int) -> dict:
    row = json.loads(R1_ROWS.read_text(encoding="utf-8").splitlines()[0])
    answer = row["conversations"][-1]
    think = answer["info"]["think_content"]
    longer = "\n\n".join(f"{think} (pass {i})" for i in range(repeat))
    answer["value"] = answer["value"].replace(think, longer)
    answer["info"]["think_content"] = longer
    return row


def _written(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def test_a_long_replayed_and_normalised_r1_trace_stores_its_reasoning_once() -> None:
    row = _long_r1_row(40)
    answer = row["conversations"][-1]
    think = answer["info"]["think_content"]
    assert len(think) > 10_000
    query, _ = query_from_am(row, with_trace=False)
    served = Completion(text=answer["value"], completion_tokens=3000, finish_reason="stop",
                        extra={"info": answer["info"]})
    trace = final_trace(query, "r1", [make_attempt(0, 0, served, None, 0.9)], False, None)
    trace.metadata.update({"model": "r1.am.jsonl", "backend": "replay"})
    for stage in ("generate", "normalise"):
        if stage == "normalise":
            normalise_trace(trace, "r1")
            assert trace.attempts[0].response != answer["value"], "normalise rewrote the layout"
        line = json.dumps(trace.model_dump(mode="json"), ensure_ascii=False)
        every_copy = json.dumps(trace.model_dump(mode="json", context={"expanded": True}), ensure_ascii=False)
        assert line.count(_written(think)) == 1, f"after {stage} the reasoning must be stored once"
        assert every_copy.count(_written(think)) == (4 if stage == "generate" else 5)
        assert len(line) < len(every_copy) / 3
        back = Trace.model_validate(json.loads(line))
        assert back == trace and back.attempts[0].original_response == answer["value"]
        assert am_from_trace(back)["conversations"][-1]["info"] == answer["info"]
        assert Trace.model_validate(json.loads(every_copy)) == trace, "a line written with every copy still loads"
    exported = am_from_trace(back)
    assert exported["conversations"][:-1] == row["conversations"][:-1]
    assert exported["conversations"][-1]["value"] == answer["value"]


def test_an_imported_row_that_went_nowhere_is_stored_once_and_exports_equal() -> None:
    row = _long_r1_row(5)
    _, trace = query_from_am(row)
    assert trace is not None
    stored = trace.model_dump(mode="json")
    assert stored[STORED_ONCE] and stored["query"]["metadata"]["am"]["row"]["conversations"][-1]["value"] is None
    assert am_from_trace(Trace.model_validate(json.loads(json.dumps(stored)))) == row


def test_a_splice_rebuilds_the_text_exactly_and_unrelated_text_is_kept() -> None:
    base = "<think>\n" + "step one. " * 50 + "</think>\n<answer>\n42\n</answer>"
    original = "step one. " * 50 + "</think>\n\n42  "
    pieces = splice_of(original, base)
    assert pieces is not None and rebuild(pieces, base) == original
    assert sum(len(p) for p in pieces if isinstance(p, str)) <= 4, "only the characters the rewrite dropped are literal"
    assert splice_of("an unrelated question about prime numbers " * 5, base) is None
