"""Property: for random mixtures of valid and damaged records, in every input format (JSON lines, gzip, Parquet)
and every row layout (flat, messages, AM), ingest never raises, keeps every valid record byte-exact, and accounts
for every line (lines = ingested + quarantined + blank), each quarantined one with a non-empty reason."""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillery.core.recipe import parse_recipe
from ingest_cases import ingest_by_hand

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Line:
    data: bytes
    outcome: str
    """kept, quarantined or blank."""
    prompt: str = ""


def _record(layout: str, prompt: str) -> dict:
    if layout == "messages":
        return {"messages": [{"role": "user", "content": prompt}], "category": "math", "reference": {"answer": "1"}}
    if layout == "am":
        return {"system": "", "conversations": [
            {"from": "human", "value": prompt, "info": {"category": "math", "ground_truth": 1}},
            {"from": "gpt", "value": "<think>t</think><answer>1</answer>", "info": None}]}
    return {"prompt": prompt, "category": "coding", "answer": 1, "extra": [1.5, None, True]}


text = st.text(max_size=40)
layouts = st.sampled_from(["flat", "messages", "am"])


@st.composite
def valid_line(draw: st.DrawFn, index: str) -> Line:
    prompt = f"[{index}] {draw(text)}"
    data = json.dumps(_record(draw(layouts), prompt), ensure_ascii=draw(st.booleans())).encode()
    return Line(draw(st.sampled_from([b"", BOM])) + data, "kept", prompt)


@st.composite
def damaged_line(draw: st.DrawFn, index: str) -> Line:
    good = json.dumps(_record(draw(layouts), f"[{index}] {draw(text)}")).encode()
    damage = draw(st.sampled_from([
        lambda: good[: draw(st.integers(1, len(good) - 1))],                      # cut short
        lambda: b"\x01" + draw(st.binary(max_size=30)).replace(b"\n", b""),       # noise
        lambda: good[:-1] + b', "x": NaN}',
        lambda: good[:-1] + b', "x": 1e999}',
        lambda: good[:-1] + b', "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        lambda: good[:-1] + b', "x": "\\udc00"}',
        lambda: good[:1] + b'"dup": 1, "dup": 2, ' + good[1:],
        lambda: good.replace(b"[", b"\xff[", 1),                                   # invalid UTF-8
        lambda: json.dumps({"prompt": draw(st.integers() | st.none() | st.lists(text)), "category": "math"}).encode(),
        lambda: json.dumps({"prompt": f"[{index}]",
                            "category": draw(st.integers() | st.sampled_from(["nope", ""]))}).encode(),
        lambda: json.dumps({"prompt": f"[{index}]", "category": "math",
                            "answer": draw(st.lists(text, max_size=2))}).encode(),
        lambda: json.dumps({"messages": draw(text | st.lists(st.integers(), max_size=2)), "category": "math"}).encode(),
        lambda: json.dumps({"conversations": [{"from": "human", "value": f"[{index}]", "info": draw(text)}]}).encode(),
    ]))()
    return Line(damage, "quarantined")


@st.composite
def jsonl_file(draw: st.DrawFn, name: str) -> list[Line]:
    lines = []
    for number in range(draw(st.integers(0, 12))):
        index = f"{name}{number}"
        kind = draw(st.sampled_from(["valid", "valid", "damaged", "blank"]))
        if kind == "blank":
            lines.append(Line(draw(st.sampled_from([b"", b"  ", b"\t", BOM])), "blank"))
        else:
            lines.append(draw(valid_line(index) if kind == "valid" else damaged_line(index)))
    return lines


def _as_read(lines: list[Line], last_newline: bool) -> list[Line]:
    """The lines a reader sees: an empty last line with no line end after it is no line at all."""
    return lines[:-1] if lines and not last_newline and lines[-1].data == b"" else lines


@st.composite
def parquet_rows(draw: st.DrawFn) -> list[tuple[dict, str, str]]:
    rows = []
    for index in range(draw(st.integers(0, 10))):
        prompt = f"[p{index}] {draw(text)}"
        damage = draw(st.sampled_from(["", "", "null prompt", "blank prompt", "bad category"]))
        rows.append(({"prompt": None if damage == "null prompt" else "  " if damage == "blank prompt" else prompt,
                      "category": "nope" if damage == "bad category" else draw(st.sampled_from(["math", "IF", None])),
                      "blob": draw(st.binary(max_size=8) | st.none())},
                     "quarantined" if damage else "kept", prompt))
    return rows


def _ingest(files: list[tuple[Path, dict]], run: Path) -> tuple[list, dict]:
    recipe = parse_recipe({"name": "property", "run_dir": str(run),
                           "steps": {"ingest": {"inputs": [{"path": str(p), **spec} for p, spec in files]}}})
    return ingest_by_hand(recipe.build_stage("ingest"), run)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain=jsonl_file("a"), zipped=jsonl_file("b"), rows=parquet_rows(), crlf=st.booleans(),
       last_newline=st.booleans(), row_group_size=st.integers(1, 4))
def test_random_mixtures_never_crash_keep_valid_records_exactly_and_account_for_every_line(
        plain: list[Line], zipped: list[Line], rows: list[tuple[dict, str, str]], crlf: bool, last_newline: bool,
        row_group_size: int) -> None:
    end = b"\r\n" if crlf else b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jsonl, gz, parquet = root / "plain.jsonl", root / "zipped.jsonl.gz", root / "rows.parquet"
        for path, lines in ((jsonl, plain), (gz, zipped)):
            data = end.join(line.data for line in lines) + (end if last_newline and lines else b"")
            path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        schema = pa.schema([("prompt", pa.string()), ("category", pa.string()), ("blob", pa.binary())])
        table = pa.Table.from_pylist([row for row, _, _ in rows], schema)
        pq.write_table(table, parquet, row_group_size=row_group_size)
        outcomes, stats = _ingest([(jsonl, {}), (gz, {}), (parquet, {"category": "general"})], root / "run")

    plain, zipped = _as_read(plain, last_newline), _as_read(zipped, last_newline)
    expected = [*plain, *zipped, *(Line(b"", outcome, prompt) for _, outcome, prompt in rows)]
    kept_prompts = sorted(next(m["content"] for m in reversed(o.record["messages"]) if m["role"] == "user")
                          for o in outcomes if o.kind == "kept")
    assert kept_prompts == sorted(line.prompt for line in expected if line.outcome == "kept"), "byte-exact, none lost"
    quarantined = [o for o in outcomes if o.kind == "quarantined"]
    assert len(quarantined) == sum(line.outcome == "quarantined" for line in expected)
    assert all(o.reason.strip() and o.where for o in quarantined)
    assert not [o for o in outcomes if o.kind == "rejected"]
    for entry, lines in zip(stats["files"], (plain, zipped, rows)):
        assert entry["complete"] and entry["lines"] == len(lines)
        assert entry["lines"] == entry["in_shard"] + entry["blank"]
    assert [e["blank"] for e in stats["files"][:2]] == [sum(x.outcome == "blank" for x in f) for f in (plain, zipped)]
