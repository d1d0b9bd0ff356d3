"""Bytes per stored trace line, every copy written (as before) against each text stored once, in one run.

The traces are the DeepSeek-R1 rows of tests/filters/data/r1_traces.am.jsonl (AM-Thinking-v1-Distilled's row
structure, R1's answer layout), their reasoning lengthened to --think-tokens by repeating its own sentences (the
released rows are short; the paper's traces run to thousands of tokens). Each goes the pipeline's way: ingest
(the AM row kept whole in the query), generate with the replay teacher (the backend's `info` in the attempt),
normalise (the text before the rewrite kept beside it). Printed per stage: mean bytes per trace line, how many
times the reasoning occurs in the line, and the ratio; every stored line is read back and checked equal, and
the AM export of every trace is checked equal to the row it came from.

    python benchmarks/bench_trace_bytes.py [--think-tokens 4000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from distillery.generate.loop import final_trace, make_attempt
from distillery.generate.normalise import normalise_trace
from distillery.llm.protocol import Sampling
from distillery.llm.replay import ReplayChatModel
from distillery.schema.formats import am_from_trace, query_from_am
from distillery.schema.records import Trace
from distillery.generate.prompts import build_conversation

R1_ROWS = Path(__file__).resolve().parents[1] / "tests" / "filters" / "data" / "r1_traces.am.jsonl"
CHARS_PER_TOKEN = 4


def lengthened(row: dict[str, Any], think_chars: int) -> dict[str, Any]:
    """The row with its answer's reasoning repeated up to `think_chars`, in the value and in info.think_content."""
    answer = row["conversations"][-1]
    info = answer.get("info") or {}
    think = info.get("think_content")
    if not think or think not in answer["value"]:
        return row
    longer = (think + "\n\n") * max(1, think_chars // (len(think) + 2))
    longer = longer.rstrip()
    row = json.loads(json.dumps(row))
    row["conversations"][-1]["value"] = answer["value"].replace(think, longer)
    row["conversations"][-1]["info"]["think_content"] = longer
    return row


def stored(trace: Trace) -> tuple[int, int, str]:
    """(bytes as stored now, bytes with every copy, the stored line)."""
    line = json.dumps(trace.model_dump(mode="json"), ensure_ascii=False)
    full = json.dumps(trace.model_dump(mode="json", context={"expanded": True}), ensure_ascii=False)
    assert Trace.model_validate(json.loads(line)) == trace, "a stored trace must read back equal"
    return len(line.encode()), len(full.encode()), full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--think-tokens", type=int, default=4000,
                        help="reasoning length per trace (~4 characters a token)")
    args = parser.parse_args()
    rows = [lengthened(json.loads(line), args.think_tokens * CHARS_PER_TOKEN)
            for line in R1_ROWS.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if (row["conversations"][-1].get("info") or {}).get("think_content")]
    with tempfile.TemporaryDirectory() as tmp:
        teacher_file = Path(tmp) / "r1.am.jsonl"
        teacher_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        teacher = ReplayChatModel(str(teacher_file), name="r1", tokenizer="smollm2")
        figures: dict[str, list[tuple[int, int, int, int]]] = {"generate": [], "normalise": []}
        for row in rows:
            query, _ = query_from_am(row, with_trace=False)
            completion = teacher.chat([build_conversation(query, None)], Sampling())[0]
            trace = final_trace(query, "r1", [make_attempt(0, 0, completion, None, 0.9)], False, None)
            trace.metadata.update({"model": str(teacher_file), "backend": "replay"})
            think = row["conversations"][-1]["info"]["think_content"]
            think = json.dumps(think, ensure_ascii=False)[1:-1]  # as it is written in a line
            for stage in ("generate", "normalise"):
                if stage == "normalise":
                    normalise_trace(trace, "r1")
                now, before, full = stored(trace)
                line = json.dumps(trace.model_dump(mode="json"), ensure_ascii=False)
                figures[stage].append((now, before, full.count(think), line.count(think)))
            assert am_from_trace(trace)["conversations"][-1]["value"] == row["conversations"][-1]["value"]
        teacher.close()
    mean_think = sum(len(row["conversations"][-1]["info"]["think_content"]) for row in rows) / len(rows)
    print(f"{len(rows)} R1 traces, reasoning ~{mean_think / CHARS_PER_TOKEN:.0f} tokens "
          f"({mean_think:.0f} characters) each")
    for stage, values in figures.items():
        now = sum(v[0] for v in values) / len(values)
        before = sum(v[1] for v in values) / len(values)
        copies_before = sum(v[2] for v in values) / len(values)
        copies_now = sum(v[3] for v in values) / len(values)
        print(f"  after {stage:<9}: every copy {before:9,.0f} bytes/trace (reasoning x{copies_before:.1f}), "
              f"stored once {now:9,.0f} bytes/trace (x{copies_now:.1f}): {before / now:.2f}x smaller")


if __name__ == "__main__":
    main()
