"""The damaged-file battery for ingest: one file per kind of damage, each line (or Parquet row) beside the outcome
expected for it. Files are built here rather than committed because their damage is bytes a diff would hide
(NUL, BOMs, invalid UTF-8, U+2028, cut gzip streams, Parquet footers).

Every prompt is unique across the battery (prefixed with its file's name), so a kept record is found by its
prompt, and every file is one input of a single ingest run.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.core.stage import Outcome, ShardContext, TwoPassStage
from distillery.core.store import RunDir

BOM = b"\xef\xbb\xbf"
MISSING = object()


@dataclass(frozen=True)
class Kept:
    prompt: str
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Quarantined:
    reason: str
    """A fragment the quarantine reason must contain."""


@dataclass(frozen=True)
class Duplicate:
    of_line: int


@dataclass(frozen=True)
class Blank:
    pass


Expect = Kept | Quarantined | Duplicate | Blank
BLANK = Blank()


@dataclass
class Case:
    name: str
    """The file name; its suffix is what the file claims to be."""
    build: Callable[[Path], None]
    expect: list[Expect]
    """One outcome per line (JSON lines, 1-based) or row (Parquet, 0-based)."""
    spec: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    """A fragment of the file-level damage the manifest must report (the file is then incomplete)."""
    rows: bool = False
    """Parquet rows (`file:row N`, 0-based) rather than lines (`file:N`, 1-based)."""

    def where(self, path: Path, index: int) -> str:
        return f"{path}:row {index}" if self.rows else f"{path}:{index + 1}"


def ingest_by_hand(stage: TwoPassStage, run: Path) -> tuple[list[Outcome], dict[str, Any]]:
    """One shard's scan, merge and process, in this process and without the runner's per-item journal fsyncs:
    the outcomes and the stats the shard's manifest would hold."""
    ctx = ShardContext(RunDir(run), stage.step, None, 0, 1, logging.getLogger("test.ingest"))
    stage.scan(iter(()), ctx)
    stage.merge(ctx)
    return list(stage.process(stage.read_inputs(ctx), ctx)), ctx.stats


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def flat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "category": "math", **extra}


def am_row(prompt: str, human_info: Any = MISSING, answer_info: Any = MISSING,
           roles: tuple[str, str] = ("human", "assistant")) -> dict[str, Any]:
    human: dict[str, Any] = {"from": roles[0], "value": prompt}
    answer: dict[str, Any] = {"from": roles[1], "value": "<think>t</think>\n<answer>a</answer>"}
    if human_info is not MISSING:
        human["info"] = human_info
    if answer_info is not MISSING:
        answer["info"] = answer_info
    return {"system": "", "conversations": [human, answer]}


def am_info(**fields: Any) -> dict[str, Any]:
    info = {"source": "unit", "category": "math", "ground_truth": "1", "test_case": None,
            "instruction_constrain": None, "think_content": None, "answer_content": None, "verify_score": None,
            "model_name": None, "ppl": None}
    info.update(fields)
    return info


def lines_case(name: str, pairs: list[tuple[bytes, Expect]], end: bytes = b"\n", last_end: bool = True,
               spec: dict[str, Any] | None = None, wrap: Callable[[bytes], bytes] | None = None,
               problem: str = "") -> Case:
    data = end.join(line for line, _ in pairs) + (end if last_end else b"")

    def build(path: Path) -> None:
        path.write_bytes(wrap(data) if wrap else data)

    return Case(name, build, [expect for _, expect in pairs], spec or {}, problem)


def parquet_case(name: str, table: pa.Table, expect: list[Expect], row_group_size: int | None = None,
                 spec: dict[str, Any] | None = None) -> Case:
    def build(path: Path) -> None:
        pq.write_table(table, path, row_group_size=row_group_size)

    return Case(name, build, expect, spec or {}, rows=True)


def ok(name: str, n: int, **extra: Any) -> tuple[bytes, Kept]:
    prompt = f"{name}/{n} what is {n} + {n}?"
    return dumps(flat(prompt, **extra)), Kept(prompt)


def _flushed_gzip(parts: list[bytes], tail: bytes = b"") -> bytes:
    """gzip data with a full flush after every part, so a cut or damage after part k leaves exactly parts 1..k."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = b"".join(compressor.compress(part) + compressor.flush(zlib.Z_FULL_FLUSH) for part in parts)
    return out + tail


def _json_cases() -> list[Case]:
    deep = b"[" * 5000 + b"]" * 5000
    nested_150: Any = "leaf"
    for _ in range(150):
        nested_150 = [nested_150]
    huge_prompt = "huge_line.jsonl/1 " + "x\u00e9\u2028" * 400_000
    return [
        lines_case("deep_nesting.jsonl", [
            ok("deep_nesting.jsonl", 1),
            (b'{"prompt": "deep_nesting.jsonl/2", "category": "math", "meta": ' + deep + b"}",
             Quarantined("nested too deep to parse (expected at most 100 levels)")),
            (dumps(flat("deep_nesting.jsonl/3", meta=nested_150)), Quarantined("expected at most 100")),
            ok("deep_nesting.jsonl", 4),
        ]),
        lines_case("huge_line.jsonl", [
            (dumps(flat(huge_prompt)), Kept(huge_prompt)),
            ok("huge_line.jsonl", 2),
        ]),
        lines_case("over_max_line_bytes.jsonl", [
            (dumps(flat("over_max_line_bytes.jsonl/1 " + "y" * 3000)),
             Quarantined("longer than max_line_bytes (2000)")),
            ok("over_max_line_bytes.jsonl", 2),
            (b"", BLANK),
            (dumps(flat("over_max_line_bytes.jsonl/4 " + "z" * 5000)), Quarantined("line of 5")),
        ], spec={"max_line_bytes": 2000}),
        lines_case("nan_infinity.jsonl", [
            (b'{"prompt": "nan_infinity.jsonl/1", "category": "math", "score": NaN}', Quarantined("NaN is not JSON")),
            (b'{"prompt": "nan_infinity.jsonl/2", "category": "math", "score": Infinity}',
             Quarantined("Infinity is not JSON")),
            (b'{"prompt": "nan_infinity.jsonl/3", "category": "math", "score": -Infinity}',
             Quarantined("-Infinity is not JSON")),
            (b'{"prompt": "nan_infinity.jsonl/4", "category": "math", "answer": NaN}',
             Quarantined("expected a finite number")),
            ok("nan_infinity.jsonl", 5, score=0.25),
        ]),
        lines_case("float_overflow.jsonl", [
            (b'{"prompt": "float_overflow.jsonl/1", "category": "math", "x": 1e400}',
             Quarantined("1e400 overflows a double")),
            (b'{"prompt": "float_overflow.jsonl/2", "category": "math", "x": -2.5E+999}', Quarantined("overflows")),
            (b'{"prompt": "float_overflow.jsonl/3", "category": "math", "x": 1e308, "tiny": 5e-324}',
             Kept("float_overflow.jsonl/3", {"metadata": {"x": 1e308, "tiny": 5e-324}})),
        ]),
        lines_case("big_integers.jsonl", [
            (b'{"prompt": "big_integers.jsonl/1", "category": "math", "answer": 1180591620717411303424, "n": '
             + b"-99999999999999999999999}",
             Kept("big_integers.jsonl/1", {"answer": "1180591620717411303424",
                                           "metadata": {"n": -99999999999999999999999}})),
            (b'{"prompt": "big_integers.jsonl/2", "category": "math", "n": ' + b"7" * 5000 + b"}",
             Quarantined("bad JSON number")),
            ok("big_integers.jsonl", 3, count=2**63),
        ]),
        lines_case("duplicate_keys.jsonl", [
            (b'{"prompt": "duplicate_keys.jsonl/1", "prompt": "duplicate_keys.jsonl/1b", "category": "math"}',
             Quarantined("duplicate key 'prompt'")),
            (b'{"prompt": "duplicate_keys.jsonl/2", "category": "math", "meta": {"a": 1, "a": 2}}',
             Quarantined("duplicate key 'a'")),
            (b'{"prompt": "duplicate_keys.jsonl/3", "category": "math", "meta": [{"a": 1}, {"a": 2}]}',
             Kept("duplicate_keys.jsonl/3", {"metadata": {"meta": [{"a": 1}, {"a": 2}]}})),
        ]),
        lines_case("lone_surrogates.jsonl", [
            (b'{"prompt": "lone_surrogates.jsonl/1 \\ud800", "category": "math"}',
             Quarantined("lone surrogate \\ud800")),
            (b'{"prompt": "lone_surrogates.jsonl/2", "category": "math", "\\udfff": 1}', Quarantined("lone surrogate")),
            (b'{"prompt": "lone_surrogates.jsonl/3 \\ud83d\\ude00", "category": "math"}',
             Kept("lone_surrogates.jsonl/3 \U0001f600")),
            (b'{"prompt": "lone_surrogates.jsonl/4 \\\\ud800", "category": "math"}',
             Kept("lone_surrogates.jsonl/4 \\ud800")),
            (b'{"prompt": "lone_surrogates.jsonl/5 \\udc00\\ud800", "category": "math"}', Quarantined("surrogate")),
        ]),
        lines_case("raw_nul.jsonl", [
            (b'{"prompt": "raw_nul.jsonl/1 a\x00b", "category": "math"}', Quarantined("Invalid control character")),
            (b'\x00{"prompt": "raw_nul.jsonl/2", "category": "math"}', Quarantined("bad JSON")),
            (b'{"prompt": "raw_nul.jsonl/3 a\\u0000b", "category": "math"}', Kept("raw_nul.jsonl/3 a\x00b")),
            (b"\x00\x00\x00", Quarantined("bad JSON")),
        ]),
        lines_case("line_separators.jsonl", [
            (dumps(flat("line_separators.jsonl/1 a\u2028b\u2029c\u0085d")),
             Kept("line_separators.jsonl/1 a\u2028b\u2029c\u0085d")),
            (dumps(flat("line_separators.jsonl/2 \u2028")), Kept("line_separators.jsonl/2 \u2028")),
            (b'{"prompt": "line_separators.jsonl/3 a\rb", "category": "math"}',
             Quarantined("Invalid control character")),
            (b'{"prompt": "line_separators.jsonl/4 a\x0cb", "category": "math"}',
             Quarantined("Invalid control character")),
            (dumps(flat("line_separators.jsonl/5 tab\tand\rcr")), Kept("line_separators.jsonl/5 tab\tand\rcr")),
        ]),
        lines_case("bom_at_start.jsonl", [
            (BOM + dumps(flat("bom_at_start.jsonl/1")), Kept("bom_at_start.jsonl/1")),
            ok("bom_at_start.jsonl", 2),
        ]),
        lines_case("bom_cat_joined.jsonl", [
            (BOM + dumps(flat("bom_cat_joined.jsonl/1")), Kept("bom_cat_joined.jsonl/1")),
            ok("bom_cat_joined.jsonl", 2),
            (BOM + dumps(flat("bom_cat_joined.jsonl/3")), Kept("bom_cat_joined.jsonl/3")),
            (BOM, BLANK),
            (BOM + b'{"prompt": "bom_cat_joined.jsonl/5", "category": 5}', Quarantined("category: expected a string")),
            (BOM + BOM + dumps(flat("bom_cat_joined.jsonl/6")), Quarantined("bad JSON")),
        ]),
        lines_case("crlf.jsonl", [
            ok("crlf.jsonl", 1),
            (b"", BLANK),
            (b"  \t ", BLANK),
            ok("crlf.jsonl", 4),
            (dumps(flat("crlf.jsonl/1 what is 1 + 1?")), Duplicate(1)),
            (dumps(flat("crlf.jsonl/6 inner\r\nline")), Kept("crlf.jsonl/6 inner\r\nline")),
        ], end=b"\r\n", last_end=False),
        lines_case("invalid_utf8.jsonl", [
            (b'{"prompt": "invalid_utf8.jsonl/1 caf\xe9", "category": "math"}',
             Quarantined("invalid UTF-8 at byte 36 (expected UTF-8 text)")),
            (b'{"prompt": "invalid_utf8.jsonl/2 \xed\xa0\x80", "category": "math"}', Quarantined("invalid UTF-8")),
            (b'{"prompt": "invalid_utf8.jsonl/3 \xc0\xaf", "category": "math"}', Quarantined("invalid UTF-8")),
            (BOM + b'{"prompt": "invalid_utf8.jsonl/4 \xff", "category": "math"}',
             Quarantined("invalid UTF-8 at byte 36")),
            ok("invalid_utf8.jsonl", 5),
        ]),
        lines_case("not_objects.jsonl", [
            (b'{"prompt": "not_objects.jsonl/1", "category": ', Quarantined("bad JSON")),
            (b"[1, 2]", Quarantined("expected a JSON object, got a list of 2")),
            (b'"just text"', Quarantined("expected a JSON object, got a string")),
            (b"42", Quarantined("expected a JSON object, got a number")),
            (b"null", Quarantined("expected a JSON object, got null")),
            (b'{"prompt": "not_objects.jsonl/6"} trailing', Quarantined("Extra data")),
            (b"{}", Quarantined("expected a `messages` list, AM `conversations`, or a prompt column")),
            ok("not_objects.jsonl", 8),
        ]),
    ]


def _type_cases() -> list[Case]:
    n = "category_types.jsonl"
    a = "category_aliases.jsonl"
    t = "answer_types.jsonl"
    p = "prompt_types.jsonl"
    return [
        lines_case(n, [
            (dumps({"prompt": f"{n}/1", "category": 3}),
             Quarantined("category: expected a string naming one of math, code")),
            (dumps({"prompt": f"{n}/2", "category": ["math"]}), Quarantined("got a list of 1")),
            (dumps({"prompt": f"{n}/3", "category": None}),
             Quarantined("category: missing, and the input sets no default")),
            (dumps({"prompt": f"{n}/4", "category": {"name": "math"}}), Quarantined("got an object")),
            (dumps({"prompt": f"{n}/5"}), Quarantined("category: missing")),
            (dumps({"prompt": f"{n}/6", "category": True}), Quarantined("got a boolean")),
        ]),
        lines_case(a, [
            (dumps({"prompt": f"{a}/1", "category": "instruction follow"}),
             Kept(f"{a}/1", {"category": "instruction_following"})),
            (dumps({"prompt": f"{a}/2", "category": "IF"}), Kept(f"{a}/2", {"category": "instruction_following"})),
            (dumps({"prompt": f"{a}/3", "category": "coding"}), Kept(f"{a}/3", {"category": "code"})),
            (dumps({"prompt": f"{a}/4", "category": " Instruction-Following "}),
             Kept(f"{a}/4", {"category": "instruction_following"})),
            (dumps({"prompt": f"{a}/5", "category": "Maths"}), Kept(f"{a}/5", {"category": "math"})),
            (dumps({"prompt": f"{a}/6", "category": "general chat"}), Kept(f"{a}/6", {"category": "chat"})),
            (dumps({"prompt": f"{a}/7", "category": "STEM"}), Kept(f"{a}/7", {"category": "science"})),
            (dumps({"prompt": f"{a}/8", "category": "algebra"}),
             Quarantined("unknown category 'algebra'; expected one of math, code, science, instruction_following, "
                         "chat, general")),
            (dumps({"prompt": f"{a}/9", "category": "instruction_following"}),
             Kept(f"{a}/9", {"category": "instruction_following"})),
            (dumps({"prompt": f"{a}/10", "category": ""}), Kept(f"{a}/10", {"category": "science"})),
        ], spec={"category": "science"}),
        lines_case(t, [
            (dumps(flat(f"{t}/1", answer=["4"])),
             Quarantined("answer: expected a string or a number, got a list of 1")),
            (dumps(flat(f"{t}/2", answer={"value": 4})),
             Quarantined("answer: expected a string or a number, got an object")),
            (dumps(flat(f"{t}/3", answer=True)), Quarantined("got a boolean")),
            (dumps(flat(f"{t}/4", answer=42)), Kept(f"{t}/4", {"answer": "42"})),
            (dumps(flat(f"{t}/5", answer=0.5)), Kept(f"{t}/5", {"answer": "0.5"})),
            (dumps(flat(f"{t}/6", answer=" \\frac{1}{2} ")), Kept(f"{t}/6", {"answer": " \\frac{1}{2} "})),
            (dumps(flat(f"{t}/7", answer=None)), Kept(f"{t}/7", {"answer": None})),
            (dumps(flat(f"{t}/8", answer=-0)), Kept(f"{t}/8", {"answer": "0"})),
        ]),
        lines_case(p, [
            (dumps({"prompt": 7, "category": "math", "id": f"{p}/1"}),
             Quarantined("prompt: expected a non-empty string (the prompt), got a number (7)")),
            (dumps({"prompt": None, "category": "math"}), Quarantined("prompt: expected a non-empty string")),
            (dumps({"prompt": ["a"], "category": "math"}), Quarantined("got a list")),
            (dumps({"prompt": "   ", "category": "math"}), Quarantined("non-empty")),
            (dumps({"problem": f"{p}/5", "category": "math", "answer": "2"}), Kept(f"{p}/5", {"answer": "2"})),
            (dumps({"question": f"{p}/6", "category": "math"}), Kept(f"{p}/6")),
            (dumps({"prompt": f"{p}/7", "category": "math", "system": 3}),
             Quarantined("system: expected a string, got a number")),
            (dumps({"prompt": f"{p}/8", "category": "math", "system": "Be brief."}),
             Kept(f"{p}/8", {"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": f"{p}/8"}]})),
        ]),
        lines_case("messages_types.jsonl", [
            (dumps({"messages": "messages_types.jsonl/1", "category": "math"}),
             Quarantined("messages: expected a non-empty list")),
            (dumps({"messages": [{"role": "user", "content": 7}], "category": "math"}), Quarantined("content: str")),
            (dumps({"messages": [{"role": "robot", "content": "messages_types.jsonl/3"}], "category": "math"}),
             Quarantined("role: system|user|assistant")),
            (dumps({"messages": [{"role": "system", "content": "messages_types.jsonl/4"}], "category": "math"}),
             Quarantined("expected at least one user turn")),
            (dumps({"messages": [], "category": "math"}), Quarantined("non-empty list")),
            (dumps({"messages": ["messages_types.jsonl/6"], "category": "math"}), Quarantined("messages[0]")),
            (dumps({"messages": [{"role": "user", "content": "messages_types.jsonl/7"}], "category": "math",
                    "reference": {"answer": "7"}, "turn_count": 1}),
             Kept("messages_types.jsonl/7", {"answer": "7", "metadata": {"turn_count": 1}})),
        ]),
        lines_case("reference_types.jsonl", [
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/1"}], "category": "math",
                    "reference": ["2"]}),
             Quarantined("reference: expected an object")),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/2"}], "category": "math",
                    "reference": {"answer": ["2"]}}), Quarantined("reference.answer: expected a string or a number")),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/3"}], "category": "code",
                    "reference": {"tests": 5}}), Quarantined("reference.tests: expected a list of {input, output}")),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/4"}], "category": "math",
                    "reference": {"gold": "2"}}), Quarantined("reference: unknown field(s) gold")),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/5"}], "category": "code",
                    "reference": {"language": "rust"}}), Quarantined("reference.language")),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/6"}], "category": "math",
                    "reference": json.dumps({"answer": 6})}), Kept("reference_types.jsonl/6", {"answer": "6"})),
            (dumps({"messages": [{"role": "user", "content": "reference_types.jsonl/7"}], "category": "code",
                    "reference": {"tests": [{"input": "1", "output": "2"}], "fn_name": 3}}),
             Quarantined("reference.fn_name: expected a string")),
        ]),
        lines_case("tests_field.jsonl", [
            (dumps({"prompt": "tests_field.jsonl/1", "category": "code",
                    "tests": [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]}),
             Kept("tests_field.jsonl/1", {"tests": [("1\n", "2\n")]})),
            (dumps({"prompt": "tests_field.jsonl/2", "category": "code",
                    "tests": {"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}}),
             Kept("tests_field.jsonl/2", {"tests": [("[1, 2]", "3")], "fn_name": "add"})),
            (dumps({"prompt": "tests_field.jsonl/3", "category": "code",
                    "tests": json.dumps([{"input": "a", "output": "b"}])}),
                    Kept("tests_field.jsonl/3", {"tests": [("a", "b")]})),
            (dumps({"prompt": "tests_field.jsonl/4", "category": "code", "tests": 5}),
             Quarantined("tests: expected a list of {input, output}")),
            (dumps({"prompt": "tests_field.jsonl/5", "category": "code", "tests": {"inputs": [1, 2], "outputs": [1]}}),
             Quarantined("same length")),
            (dumps({"prompt": "tests_field.jsonl/6", "category": "code", "tests": "[{not json"}),
             Quarantined("the text is not JSON")),
            (dumps({"prompt": "tests_field.jsonl/7", "category": "instruction_following",
                    "instruction_id_list": ["punctuation:no_comma"], "kwargs": [None]}),
             Kept("tests_field.jsonl/7",
                  {"reference": {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}]}})),
            (dumps({"prompt": "tests_field.jsonl/8", "category": "instruction_following",
                    "instruction_id_list": ["a", "b"], "kwargs": [{}]}),
                    Quarantined("kwargs: expected a list of 2 objects")),
        ]),
        lines_case("metadata_numbers.jsonl", [
            (dumps(flat("metadata_numbers.jsonl/1", level=3, zero=0, neg=-1.5, tiny=1e-300, flag=False, nothing=None,
                        nested={"a": [1, 2.0, {"b": 3}]}, score=1.0)),
             Kept("metadata_numbers.jsonl/1", {"metadata": {"level": 3, "zero": 0, "neg": -1.5, "tiny": 1e-300,
                                                            "flag": False, "nothing": None,
                                                            "nested": {"a": [1, 2.0, {"b": 3}]}, "score": 1.0}})),
        ]),
    ]


def _am_cases() -> list[Case]:
    d = "am_info_drift.jsonl"
    s = "am_verify_score.jsonl"
    g = "am_ground_truth.jsonl"
    c = "am_test_case.jsonl"
    i = "am_instruction_constrain.jsonl"
    r = "am_roles.jsonl"
    no_category = am_info()
    del no_category["category"]
    tests_obj = {"inputs": ["1\n"], "outputs": ["2\n"], "fn_name": None}
    constraint = {"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
                  "kwargs": [None, {"relation": "at least", "num_words": 300}]}
    row_with_text_info = am_row(f"{d}/3", json.dumps(am_info(ground_truth="3")),
                                json.dumps(am_info(verify_score="1.0")))
    return [
        lines_case(d, [
            (dumps(am_row(f"{d}/1", MISSING, am_info(category="code", ground_truth=None))),
             Kept(f"{d}/1", {"category": "code"})),
            (dumps(am_row(f"{d}/2", None, None)), Quarantined("info.category: missing")),
            (dumps(row_with_text_info), Kept(f"{d}/3", {"answer": "3", "am_row": row_with_text_info})),
            (dumps(am_row(f"{d}/4", "{not json")),
             Quarantined("conversations[0].info: expected an object or its JSON text")),
            (dumps(am_row(f"{d}/5", ["math"])), Quarantined("conversations[0].info: expected an object, null")),
            (dumps(am_row(f"{d}/6", "")), Quarantined("info.category: missing")),
            (dumps(am_row(f"{d}/7", no_category, am_info(category="IF"))),
             Kept(f"{d}/7", {"category": "instruction_following"})),
        ]),
        lines_case(s, [
            (dumps(am_row(f"{s}/{n}", am_info(), am_info(verify_score=score))), Kept(f"{s}/{n}"))
            for n, score in enumerate(["1.0", 1, 1.0, "high", None, [1]], start=1)
        ]),
        lines_case(g, [
            (dumps(am_row(f"{g}/1", am_info(ground_truth=2))), Kept(f"{g}/1", {"answer": "2"})),
            (dumps(am_row(f"{g}/2", am_info(ground_truth=0.5))), Kept(f"{g}/2", {"answer": "0.5"})),
            (dumps(am_row(f"{g}/3", am_info(ground_truth="\\frac{1}{2}"))), Kept(f"{g}/3", {"answer": "\\frac{1}{2}"})),
            (dumps(am_row(f"{g}/4", am_info(ground_truth=["1", "2"]))),
             Quarantined("info.ground_truth: expected a string or a number")),
            (dumps(am_row(f"{g}/5", am_info(ground_truth=None))), Kept(f"{g}/5", {"answer": None})),
            (dumps(am_row(f"{g}/6", am_info(ground_truth=None), am_info(ground_truth=6))),
             Kept(f"{g}/6", {"answer": "6"})),
        ]),
        lines_case(c, [
            (dumps(am_row(f"{c}/1", am_info(category="code", test_case=tests_obj))),
             Kept(f"{c}/1", {"tests": [("1\n", "2\n")]})),
            (dumps(am_row(f"{c}/2", am_info(category="code", test_case=json.dumps(tests_obj)))),
             Kept(f"{c}/2", {"tests": [("1\n", "2\n")]})),
            (dumps(am_row(f"{c}/3", am_info(category="code", test_case="assert add(1, 2) == 3"))),
             Kept(f"{c}/3", {"tests": []})),
            (dumps(am_row(f"{c}/4", am_info(category="code", test_case='{"inputs": [1'))),
             Quarantined("info.test_case: expected")),
            (dumps(am_row(f"{c}/5", am_info(category="code", test_case=5))),
             Quarantined("info.test_case: expected a list")),
            (dumps(am_row(f"{c}/6", am_info(category="code",
                                            test_case={"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}))),
             Kept(f"{c}/6", {"tests": [("[1, 2]", "3")], "fn_name": "add"})),
        ]),
        lines_case(i, [
            (dumps(am_row(f"{i}/1", am_info(category="instruction follow", instruction_constrain=constraint))),
             Kept(f"{i}/1", {"reference": {"instructions": [
                 {"id": "punctuation:no_comma", "kwargs": {}},
                 {"id": "length_constraints:number_words", "kwargs": {"relation": "at least", "num_words": 300}}]}})),
            (dumps(am_row(f"{i}/2", am_info(category="IF", instruction_constrain=json.dumps(constraint)))),
             Kept(f"{i}/2", {"category": "instruction_following"})),
            (dumps(am_row(f"{i}/3", am_info(instruction_constrain={"instruction_id_list": ["a"], "kwargs": [{}, {}]}))),
             Quarantined("kwargs: expected a list of 1 objects")),
            (dumps(am_row(f"{i}/4", am_info(instruction_constrain=["punctuation:no_comma"]))),  # bare ids, no kwargs
             Kept(f"{i}/4", {"reference": {"instructions": [{"id": "punctuation:no_comma", "kwargs": {}}]}})),
            (dumps(am_row(f"{i}/6", am_info(instruction_constrain=[{"id": 1}]))),
             Quarantined("expected a list of instruction ids")),
            (dumps(am_row(f"{i}/5", am_info(instruction_constrain="{bad"))), Quarantined("info.instruction_constrain")),
        ]),
        lines_case(r, [
            (dumps(am_row(f"{r}/1", am_info(), am_info(), roles=("user", "gpt"))), Kept(f"{r}/1")),
            (dumps(am_row(f"{r}/2", am_info(), am_info(), roles=("Human", "GPT"))), Kept(f"{r}/2")),
            (dumps(am_row(f"{r}/3", am_info(), am_info(), roles=("human", "bot"))),
             Quarantined("conversations[1].from: expected one of human, user, gpt, assistant, system")),
            (dumps({"conversations": [{"from": "human", "value": 3}]}),
             Quarantined("conversations[0].value: expected a string")),
            (dumps({"conversations": []}), Quarantined("conversations: expected a non-empty list")),
            (dumps({"conversations": [{"from": "assistant", "value": f"{r}/6"}]}),
             Quarantined("expected at least one human turn")),
            (dumps({"conversations": [{"from": ["human"], "value": f"{r}/7"}]}), Quarantined("from: expected one of")),
            (dumps({"system": 5, "conversations": [{"from": "human", "value": f"{r}/8"}]}),
             Quarantined("system: expected a string")),
        ]),
        lines_case("am_ppl_string.jsonl", [
            (dumps(am_row("am_ppl_string.jsonl/1", am_info(), am_info(ppl="1.83"))), Kept("am_ppl_string.jsonl/1")),
            (dumps(am_row("am_ppl_string.jsonl/2", am_info(), am_info(ppl="n/a"))), Kept("am_ppl_string.jsonl/2")),
        ]),
        lines_case("mixed_layouts.jsonl", [
            ok("mixed_layouts.jsonl", 1),
            (dumps({"messages": [{"role": "user", "content": "mixed_layouts.jsonl/2"}], "category": "code"}),
             Kept("mixed_layouts.jsonl/2", {"category": "code"})),
            (dumps(am_row("mixed_layouts.jsonl/3", am_info(ground_truth=3))),
             Kept("mixed_layouts.jsonl/3", {"answer": "3"})),
            (dumps({"conversations": [{"from": "human", "value": "mixed_layouts.jsonl/4"},
                                      {"from": "gpt", "value": "hi"}]}),
             Kept("mixed_layouts.jsonl/4", {"category": "general"})),
            (dumps({"text": "mixed_layouts.jsonl/5"}), Quarantined("expected a `messages` list, AM `conversations`")),
            (dumps({"problem": "mixed_layouts.jsonl/6", "answer": "6", "level": 2}),
             Kept("mixed_layouts.jsonl/6", {"category": "general", "answer": "6", "metadata": {"level": 2}})),
            (dumps({"messages": [{"role": "user", "content": "mixed_layouts.jsonl/7"}], "prompt": "ignored"}),
             Kept("mixed_layouts.jsonl/7", {"metadata": {"prompt": "ignored"}})),
        ], spec={"category": "general"}),
    ]


def _nested_table() -> pa.Table:
    name = "parquet_binary_nested.parquet"
    return pa.table({
        "prompt": pa.array([f"{name}/0", f"{name}/1"]),
        "category": ["math", "math"],
        "blob": pa.array([b"\x00\xffpng", None], pa.binary()),
        "info": pa.array([{"a": 1, "b": [1.5, 2.5]}, {"a": None, "b": []}],
                         pa.struct([("a", pa.int64()), ("b", pa.list_(pa.float64()))])),
        "ratio": pa.array([float("nan"), float("-inf")], pa.float64()),
        "when": pa.array([datetime.datetime(2025, 5, 1, 12, 30), None], pa.timestamp("us")),
        "price": pa.array([decimal.Decimal("1.10"), decimal.Decimal("-0.5")], pa.decimal128(5, 2)),
        "tags": pa.array([{"k": "v"}, {}], pa.map_(pa.string(), pa.string())),
        "big": pa.array([2**63 - 1, -(2**63)], pa.int64()),
    })


def _nested_checks(index: int) -> dict[str, Any]:
    if index == 0:
        return {"metadata": {"blob": {"$base64": "AP9wbmc="}, "info": {"a": 1, "b": [1.5, 2.5]},
                             "ratio": {"$float": "nan"}, "when": "2025-05-01T12:30:00", "price": "1.10",
                             "tags": [["k", "v"]], "big": 2**63 - 1}}
    return {"metadata": {"blob": None, "info": {"a": None, "b": []}, "ratio": {"$float": "-inf"}, "when": None,
                         "price": "-0.50", "tags": [], "big": -(2**63)}}


def _parquet_cases() -> list[Case]:
    g = "parquet_row_groups.parquet"
    nul = "parquet_nulls.parquet"
    ls = "parquet_large_string.parquet"
    messages_type = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    info_type = pa.struct([("source", pa.string()), ("category", pa.string()), ("ground_truth", pa.string()),
                           ("verify_score", pa.float64()), ("model_name", pa.string())])
    am_type = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string()), ("info", info_type)]))
    am_rows = [[{"from": "human", "value": "parquet_am.parquet/0",
                 "info": {"source": "s", "category": "math", "ground_truth": "4", "verify_score": None,
                          "model_name": None}},
                {"from": "assistant", "value": "<think>t</think><answer>4</answer>",
                 "info": {"source": None, "category": None, "ground_truth": None, "verify_score": 1.0,
                          "model_name": "m"}}],
               [{"from": "human", "value": "parquet_am.parquet/1", "info": None}]]
    prompts = [f"{g}/{n}" for n in range(7)]
    prompts[3] = None
    return [
        parquet_case(g, pa.table({"prompt": prompts, "category": ["math"] * 7, "answer": [str(n) for n in range(7)]}),
                     [Kept(f"{g}/{n}", {"answer": str(n)}) if n != 3
                      else Quarantined("prompt: expected a non-empty string") for n in range(7)], row_group_size=2),
        parquet_case(nul, pa.table({"prompt": [f"{nul}/0", None, f"{nul}/2", f"{nul}/3"],
                                    "category": ["math", "math", None, "code"],
                                    "answer": ["1", "2", None, "4"], "extra": pa.array([1, 2, None, 4], pa.int64())}),
                     [Kept(f"{nul}/0", {"metadata": {"extra": 1}}), Quarantined("got null"),
                      Kept(f"{nul}/2", {"category": "science", "answer": None, "metadata": {"extra": None}}),
                      Kept(f"{nul}/3", {"category": "code", "metadata": {"extra": 4}})], spec={"category": "science"}),
        parquet_case(ls, pa.table({"prompt": pa.array([f"{ls}/0 \u2028", f"{ls}/1"], pa.large_string()),
                                   "answer": pa.array(["x" * 100_000, "\u00e9"], pa.large_string()),
                                   "category": pa.array(["math", "math"], pa.large_string())}),
                     [Kept(f"{ls}/0 \u2028", {"answer": "x" * 100_000}), Kept(f"{ls}/1", {"answer": "\u00e9"})]),
        parquet_case("parquet_binary_nested.parquet", _nested_table(),
                     [Kept(f"parquet_binary_nested.parquet/{n}", _nested_checks(n)) for n in range(2)]),
        parquet_case("parquet_wrong_type.parquet", pa.table({"prompt": [1, 2], "category": ["math", "math"]}),
                     [Quarantined("prompt: expected a non-empty string (the prompt), got a number (1)"),
                      Quarantined("got a number (2)")]),
        parquet_case("parquet_binary_prompt.parquet",
                     pa.table({"prompt": pa.array([b"parquet_binary_prompt.parquet/0"], pa.binary()),
                               "category": ["math"]}),
                     [Quarantined("prompt: expected a non-empty string (the prompt), got an object")]),
        parquet_case("parquet_answer_list.parquet",
                     pa.table({"prompt": ["parquet_answer_list.parquet/0", "parquet_answer_list.parquet/1"],
                               "answer": pa.array([["1"], None], pa.list_(pa.string())), "category": ["math", "code"]}),
                     [Quarantined("answer: expected a string or a number, got a list of 1"),
                      Kept("parquet_answer_list.parquet/1", {"answer": None, "category": "code"})]),
        parquet_case("parquet_category_int.parquet",
                     pa.table({"prompt": ["parquet_category_int.parquet/0"], "category": pa.array([3], pa.int32())}),
                     [Quarantined("category: expected a string")]),
        parquet_case("parquet_zero_rows.parquet",
                     pa.table({"prompt": pa.array([], pa.string()), "category": pa.array([], pa.string())}), []),
        parquet_case("parquet_messages.parquet",
                     pa.table({"messages": pa.array([[{"role": "user", "content": "parquet_messages.parquet/0"}],
                                                     [{"role": "user", "content": None}]], messages_type),
                               "category": ["code", "code"]}),
                     [Kept("parquet_messages.parquet/0", {"category": "code"}), Quarantined("messages[0]")]),
        parquet_case("parquet_am.parquet", pa.table({"system": ["", ""], "conversations": pa.array(am_rows, am_type)}),
                     [Kept("parquet_am.parquet/0", {"answer": "4", "category": "math"}),
                     Quarantined("info.category: missing")]),
        _parquet_named_jsonl(),
        _jsonl_named_parquet(),
        _unreadable_row_group(),
    ]


def _parquet_named_jsonl() -> Case:
    name = "parquet_named_jsonl.jsonl"

    def build(path: Path) -> None:
        pq.write_table(pa.table({"prompt": [f"{name}/0"], "category": ["math"]}), path)

    return Case(name, build, [Kept(f"{name}/0")], rows=True)


def _jsonl_named_parquet() -> Case:
    return lines_case("jsonl_named_parquet.parquet", [
        (BOM + dumps(flat("jsonl_named_parquet.parquet/1")), Kept("jsonl_named_parquet.parquet/1")),
        (b"{broken", Quarantined("bad JSON")),
    ])


def _unreadable_row_group() -> Case:
    """Two row groups; the second's data page is overwritten while the footer stays intact."""
    name = "parquet_bad_row_group.parquet"

    def build(path: Path) -> None:
        pq.write_table(pa.table({"prompt": [f"{name}/{n}" for n in range(4)], "category": ["math"] * 4}), path,
                       row_group_size=2, compression="none")
        column = pq.ParquetFile(path).metadata.row_group(1).column(0)
        data = bytearray(path.read_bytes())
        data[column.data_page_offset:column.data_page_offset + 8] = b"\xff" * 8
        path.write_bytes(bytes(data))

    return Case(name, build, [Kept(f"{name}/0"), Kept(f"{name}/1"),
    Quarantined("row group 1 of the Parquet file is unreadable"),
                              Quarantined("row group 1")], problem="row group 1 is unreadable", rows=True)


def _gzip_cases() -> list[Case]:
    v = "gzip_valid.jsonl.gz"
    t = "gzip_truncated.jsonl.gz"
    c = "gzip_corrupt.jsonl.gz"
    valid = [ok(v, 1), (b"", BLANK), ok(v, 3), (b'{"prompt": 3}', Quarantined("expected a non-empty string"))]
    cut_lines = [dumps(flat(f"{t}/{n}")) + b"\n" for n in (1, 2)]
    third = dumps(flat(f"{t}/3 this line is cut"))
    corrupt_lines = [dumps(flat(f"{c}/{n}")) + b"\n" for n in (1, 2)]
    members = [gzip.compress(dumps(flat(f"gzip_multi_member.jsonl.gz/{n}")) + b"\n") for n in (1, 2)]
    crc = bytearray(gzip.compress(b"".join(dumps(flat(f"gzip_bad_crc.jsonl.gz/{n}")) + b"\n" for n in (1, 2))))
    crc[-8] ^= 0xFF
    return [
        lines_case(v, valid, wrap=gzip.compress),
        Case(t, lambda path: path.write_bytes(_flushed_gzip([*cut_lines, third[:20]], tail=b"")),
             [Kept(f"{t}/1"), Kept(f"{t}/2"), Quarantined("last line cut off (gzip stream ends after")],
             problem="gzip stream ends"),
        Case(c, lambda path: path.write_bytes(_flushed_gzip([*corrupt_lines, b'{"prompt": "half'], tail=b"\xff" * 40)),
             [Kept(f"{c}/1"), Kept(f"{c}/2"), Quarantined("last line cut off (corrupt gzip data")],
             problem="corrupt gzip data"),
        Case("gzip_multi_member.jsonl.gz", lambda path: path.write_bytes(b"".join(members) + b"\x00" * 8),
             [Kept("gzip_multi_member.jsonl.gz/1"), Kept("gzip_multi_member.jsonl.gz/2")]),
        Case("gzip_bad_crc.jsonl.gz", lambda path: path.write_bytes(bytes(crc)),
             [Kept("gzip_bad_crc.jsonl.gz/1"), Kept("gzip_bad_crc.jsonl.gz/2")], problem="incorrect data check"),
        lines_case("gzip_named_plain.jsonl", [ok("gzip_named_plain.jsonl", 1)], wrap=gzip.compress),
        Case("gzip_empty_member.jsonl.gz", lambda path: path.write_bytes(gzip.compress(b"")), []),
    ]


def battery() -> list[Case]:
    return [*_json_cases(), *_type_cases(), *_am_cases(), *_parquet_cases(), *_gzip_cases()]
