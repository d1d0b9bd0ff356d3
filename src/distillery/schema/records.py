"""The records that flow between stages: a `Query` and one teacher's `Trace` of it.

A query's id is a hash of its normalised content (category + message texts), so the same question
ingested twice, from two files or two runs, gets the same id; shards are keyed by these ids.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer,
                      model_validator)

from distillery.schema.responses import parse_response
from distillery.schema.stored_once import compact, expand

Category = Literal["math", "code", "science", "instruction_following", "chat", "general"]
CATEGORIES: tuple[str, ...] = ("math", "code", "science", "instruction_following", "chat", "general")

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace-collapsed text: the form ids and exact dedup are computed on."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Record):
    role: Literal["system", "user", "assistant"]
    content: str


class TestCase(_Record):
    """One code test: stdin/stdout (`fn_name` unset) or a function call with JSON-encoded arguments."""

    __test__ = False  # not a pytest class, despite the name

    input: str
    output: str


class Reference(_Record):
    """What an answer is checked against; which fields matter depends on the category."""

    answer: str | None = None
    """Gold final answer (math, science, general)."""
    tests: list[TestCase] = Field(default_factory=list)
    """Code tests (LiveCodeBench style)."""
    fn_name: str | None = None
    """Function name for call-style code tests; None means stdin/stdout."""
    starter_code: str | None = None
    """Code the answer must complete (call-style problems)."""
    language: Literal["python", "cpp"] = "python"
    """Language the code answer is expected in."""
    instructions: list[dict[str, Any]] = Field(default_factory=list)
    """IFEval-style constraints: [{"id": "punctuation:no_comma", "kwargs": {...}}]."""


class Query(_Record):
    id: str
    category: Category
    messages: list[Message]
    reference: Reference = Field(default_factory=Reference)
    source: str = ""
    """Where the query came from (dataset name, file)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Fields of the input format with no typed home, kept so export is lossless."""

    @property
    def prompt(self) -> str:
        """The last user message: the question itself."""
        return next(m.content for m in reversed(self.messages) if m.role == "user")


def query_id(category: str, messages: list[Message]) -> str:
    """Stable id: sha256 over the category and the normalised texts of the non-assistant turns."""
    digest = hashlib.sha256(category.encode())
    for message in messages:
        if message.role != "assistant":
            digest.update(b"\x00" + message.role.encode() + b"\x01" + normalise_text(message.content).encode())
    return digest.hexdigest()[:24]


def make_query(
    category: str,
    messages: list[Message] | list[dict[str, str]],
    reference: Reference | None = None,
    source: str = "",
    metadata: dict[str, Any] | None = None,
) -> Query:
    parsed = [m if isinstance(m, Message) else Message(**m) for m in messages]
    return Query(
        id=query_id(category, parsed),
        category=category,  # type: ignore[arg-type]
        messages=parsed,
        reference=reference or Reference(),
        source=source,
        metadata=metadata or {},
    )


class Attempt(_Record):
    """One generation of one teacher for one query, with its verdict."""

    index: int
    seed: int
    response: str
    score: float | None = None
    passed: bool | None = None
    verifier: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None

    @property
    def original_response(self) -> str:
        """The text as the teacher wrote it: `response` before a `normalise` step rewrote its layout."""
        return self.details.get("normalised", {}).get("original", self.response)


class Trace(_Record):
    """A teacher's answer to a query: every attempt, each attempt's text stored once.

    The accepted response's parts (`think`, `answer`) are derived on read, never stored. Written as JSON, every
    other copy of a response (the imported row's answer turn and its `info`, a replay backend's `info`, the text
    before `normalise`) is stored as a splice of it and rebuilt on read (`schema.stored_once`), so a trace line
    carries the reasoning once. Records written before that (full copies, or `think`/`answer` keys) still load.
    """

    query: Query
    teacher: str
    attempts: list[Attempt] = Field(default_factory=list)
    accepted: int | None = None
    """Index into `attempts` of the first attempt that reached the threshold; None if none did."""
    response_tokens: int = 0
    ppl: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.query.id}:{self.teacher}"

    @property
    def response(self) -> str:
        """The accepted response as generated, or "" when no attempt passed."""
        return self.attempts[self.accepted].response if self.accepted is not None else ""

    @property
    def verdict(self) -> Attempt | None:
        return self.attempts[self.accepted] if self.accepted is not None else None

    @property
    def think(self) -> str:
        """The accepted response's reasoning (its `<think>` part)."""
        return parse_response(self.response).think if self.accepted is not None else ""

    @property
    def answer(self) -> str:
        """The accepted response's answer part."""
        return parse_response(self.response).answer if self.accepted is not None else ""

    @model_validator(mode="before")
    @classmethod
    def _derived_parts(cls, data: Any) -> Any:
        """Older records stored the parts; they are derived now. Copies stored once are put back."""
        if isinstance(data, dict) and ("think" in data or "answer" in data):
            data = {key: value for key, value in data.items() if key not in ("think", "answer")}
        return expand(data) if isinstance(data, dict) else data

    @model_serializer(mode="wrap")
    def _store_once(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """JSON dumps (what is stored) hold each response once; `context={"expanded": True}` writes every copy."""
        data = handler(self)
        if info.mode_is_json() and not (info.context or {}).get("expanded"):
            return compact(data)
        return data
