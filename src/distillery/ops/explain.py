"""`distillery explain STAGE`: a stage's config as a tree, each field with its meaning and default.

Nested settings (ingest's inputs, generate's verify and strategy tables, a verifier's sandbox limits) are shown
under their field, indented, so an operator can write a recipe from this output alone.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (X, list[X], dict[str, X], X | None, Annotated[X, ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        for model in nested_models(argument):
            if model not in found:
                found.append(model)
    return found


def type_name(annotation: Any) -> str:
    """A short readable name of a field's type: `list[InputSpec]`, `float | None`, `'keep' | 'drop'`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if arg is type(None) else type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        arguments = ", ".join(type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{arguments}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "defaults below"
    text = repr(default)
    return f"default {text if len(text) <= 60 else text[:57] + '...'}"


def field_lines(model: type[BaseModel], indent: int = 2, seen: tuple[type[BaseModel], ...] = ()) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        pad = " " * indent
        head = f"{pad}{name}: {type_name(info.annotation)}"
        lines.append(f"{head:<48} {info.description or ''} ({default_text(info)})")
        for nested in nested_models(info.annotation):
            if nested in seen or nested is model:
                lines.append(f"{pad}  ({nested.__name__}: as above)")
                continue
            doc = (nested.__doc__ or "").strip().splitlines()
            if len(nested_models(info.annotation)) > 1 or doc:
                lines.append(f"{pad}  {nested.__name__}{': ' + doc[0] if doc else ''}")
            lines += field_lines(nested, indent + 4, seen + (model,))
    return lines


def explain(name: str, stage_cls: type) -> str:
    """The stage's one-line description, then its config's fields as a tree."""
    summary = (stage_cls.__doc__ or stage_cls.__module__).strip().splitlines()[0]
    return "\n".join([f"{name}: {summary}", *field_lines(stage_cls.Config)])
