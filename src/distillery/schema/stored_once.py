"""A stored trace holds each text once: copies of an attempt's response elsewhere in the record are written as
splices of it and rebuilt on read.

A trace that came from a released file carries its reasoning in many places: the imported row (the answer
turn's `value`, its `info.think_content` and `info.answer_content`), the replay backend's `info`, the attempt's
`response`, and after `normalise` the original text beside the rewritten one. Written out, every string of at
least `MIN_LENGTH` characters outside the responses that can be rebuilt from one attempt's response (slices of
it plus a few literal characters, such as the tags `normalise` added) is replaced by null and listed under
`STORED_ONCE` as (path, attempt index, pieces); a piece is a [start, end] slice of that response or a literal
string. Reading puts every listed string back, so the record in memory is the one that was written, and any
view (export, filters) sees every field as before. A record without `STORED_ONCE` (written before this) loads
as it is. Only the responses are never elided, so readers of raw records (`analyze.collect`) still find them.
"""

from __future__ import annotations

from typing import Any

STORED_ONCE = "stored_once"
"""Key of a stored trace listing its elided copies."""

MIN_LENGTH = 128
"""Shorter strings are not worth a splice."""

_PROBE = 32
_MAX_LITERAL = 256
"""A splice with more literal characters than this is no copy: the text stays as it is."""

Piece = list[int] | str
Path = list[str | int]


def splice_of(text: str, base: str) -> list[Piece] | None:
    """`text` as slices of `base` and short literals, or None when it is not (nearly) a copy of a part of `base`."""
    if text[:_PROBE] not in base and text[-_PROBE:] not in base:
        return None
    pieces: list[Piece] = []
    literal = 0
    position = hint = 0
    while position < len(text):
        probe = text[position:position + _PROBE]
        start = base.find(probe, hint)
        if start < 0:
            start = base.find(probe)
        if start < 0:
            literal += 1
            if literal > _MAX_LITERAL:
                return None
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += text[position]
            else:
                pieces.append(text[position])
            position += 1
            continue
        length = len(probe) + _common_prefix(text, position + len(probe), base, start + len(probe))
        pieces.append([start, start + length])
        position += length
        hint = start + length
    return pieces


def _common_prefix(a: str, i: int, b: str, j: int) -> int:
    """Length of the common prefix of a[i:] and b[j:] (slice comparisons, so the loop runs in C)."""
    limit = min(len(a) - i, len(b) - j)
    low, step = 0, 64
    while low < limit:
        size = min(step, limit - low)
        if a[i + low:i + low + size] == b[j + low:j + low + size]:
            low += size
            step *= 2
        elif step > 1:
            step //= 2
        else:
            break
    return low


def rebuild(pieces: list[Piece], base: str) -> str:
    return "".join(base[piece[0]:piece[1]] if isinstance(piece, list) else piece for piece in pieces)


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """A dumped trace with every long copy of an attempt's response elided (see the module's docstring)."""
    responses = [attempt.get("response") or "" for attempt in record.get("attempts", [])]
    if not any(len(response) >= MIN_LENGTH for response in responses):
        return record
    accepted = record.get("accepted")
    order = ([accepted] if isinstance(accepted, int) else []) + [i for i in range(len(responses)) if i != accepted]
    elided: list[list[Any]] = []

    def visit(value: Any, path: Path, own: int | None) -> Any:
        if isinstance(value, dict):
            return {key: visit(item, [*path, key], own) for key, item in value.items()}
        if isinstance(value, list):
            return [visit(item, [*path, index], own) for index, item in enumerate(value)]
        if isinstance(value, str) and len(value) >= MIN_LENGTH:
            for index in ([own] if own is not None else []) + order:
                pieces = splice_of(value, responses[index])
                if pieces is not None:
                    elided.append([path, index, pieces])
                    return None
        return value

    out = {key: visit(value, [key], None) if key != "attempts" else value for key, value in record.items()}
    out["attempts"] = [
        {key: visit(value, ["attempts", index, key], index) if key != "response" else value
         for key, value in attempt.items()}
        for index, attempt in enumerate(record.get("attempts", []))
    ]
    if elided:
        out[STORED_ONCE] = elided
    return out if elided else record


def expand(record: dict[str, Any]) -> dict[str, Any]:
    """A stored trace with every elided copy put back (a record without `STORED_ONCE` is returned as it is).
    The input is not changed: the containers on each elided path are copied."""
    if STORED_ONCE not in record:
        return record
    out = {key: value for key, value in record.items() if key != STORED_ONCE}
    responses = [attempt.get("response") or "" for attempt in out.get("attempts", [])]
    for path, index, pieces in record[STORED_ONCE]:
        out = _replaced(out, path, rebuild(pieces, responses[index]))
    return out


def _replaced(container: Any, path: Path, value: str) -> Any:
    if not path:
        return value
    copy = list(container) if isinstance(container, list) else dict(container)
    copy[path[0]] = _replaced(container[path[0]], path[1:], value)  # type: ignore[index]
    return copy
