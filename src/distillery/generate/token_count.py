"""Which tokenizer counts a replay teacher's tokens: a file of released traces has no counts of its own.

The teacher's own `options.tokenizer` wins; without it the `generate` step's `replay_tokenizer` counts them, which
should name the student (default: the embedded SmolLM2, every stage's default student and reference model), so
lengths in the report are the tokens the student will train on. Other backends report their own counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillery.core.teachers import TeacherConfig


def counting_tokenizer(teacher: TeacherConfig, fallback: str) -> str | None:
    """The model reference whose tokenizer counts this teacher's tokens; None when the backend counts them."""
    if teacher.backend != "replay":
        return None
    return str(teacher.options.get("tokenizer") or fallback)


def with_counting_tokenizer(teacher: TeacherConfig, fallback: str) -> TeacherConfig:
    """The teacher's entry with the tokenizer that counts its tokens filled in (unchanged for other backends)."""
    tokenizer = counting_tokenizer(teacher, fallback)
    if tokenizer is None or teacher.options.get("tokenizer") == tokenizer:
        return teacher
    return teacher.model_copy(update={"options": {**teacher.options, "tokenizer": tokenizer}})
