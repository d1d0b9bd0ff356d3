"""`clean`: repair each query's text and drop the ones no teacher can answer as written.

Keeps a query after NFKC normalisation and removal of control/invalid characters; drops it, with a reason, when
its prompt is empty or outside the length limits, or when it depends on a URL or an image it does not contain.
A record that is not a valid Query (non-string content, missing fields) is quarantined. The query id is kept:
it names the query as ingested, and exact dedup works on normalised text, not on ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from pydantic import Field, ValidationError

from distillery.schema.records import Query
from distillery.core.stage import Item, Outcome, RecordStage, ShardContext, StageConfig, register
from distillery.prepare.textclean import image_dependency, repair_unicode, url_dependency


class CleanConfig(StageConfig):
    min_chars: int = Field(8, ge=1, description="Shortest prompt kept, in characters after cleaning.")
    max_chars: int = Field(32000, ge=1, description="Longest prompt kept, in characters after cleaning.")
    max_input_chars: int = Field(200_000, ge=1, description="Records with more text than this are dropped before any work.")
    drop_url_dependent: bool = Field(True, description="Drop queries that point at a URL whose content they lack.")
    drop_image_dependent: bool = Field(True, description="Drop queries that refer to an image or figure they do not contain.")


def _invalid(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"invalid query: {'.'.join(str(p) for p in first['loc'])}: {first['msg']} ({error.error_count()} errors)"


@register
class CleanStage(RecordStage[CleanConfig]):
    name = "clean"
    Config = CleanConfig

    def process(self, items: Iterable[Item], ctx: ShardContext) -> Iterator[Outcome]:
        config = self.config
        reasons: Counter[str] = Counter()
        removed_chars = 0
        for item in items:
            outcome, removed = self._one(item, config)
            removed_chars += removed
            if outcome.kind != "kept":
                reasons[outcome.reason.split(":", 1)[0]] += 1
            yield outcome
        ctx.stats.update({"drop_reasons": dict(sorted(reasons.items())), "removed_characters": removed_chars})

    def _one(self, item: Item, config: CleanConfig) -> tuple[Outcome, int]:
        if item.record is None:
            return Outcome.quarantined(item, f"unreadable input: {item.problem}"), 0
        try:
            query = Query.model_validate(item.record)
        except ValidationError as error:
            return Outcome.quarantined(item, _invalid(error)), 0
        total = sum(len(m.content) for m in query.messages)
        if total > config.max_input_chars:
            return Outcome.rejected(item, f"too_long: {total} characters in all messages > max_input_chars {config.max_input_chars}"), 0
        removed = 0
        for message in query.messages:
            message.content, dropped = repair_unicode(message.content)
            removed += dropped
        if not any(m.role == "user" for m in query.messages):
            return Outcome.quarantined(item, "invalid query: no user message"), removed
        prompt = query.prompt.strip()
        record = query.model_dump(mode="json")
        if not prompt:
            return Outcome.rejected(item, "empty: the prompt has no text after cleaning", record), removed
        if len(prompt) < config.min_chars:
            return Outcome.rejected(item, f"too_short: {len(prompt)} characters < min_chars {config.min_chars}", record), removed
        if len(prompt) > config.max_chars:
            return Outcome.rejected(item, f"too_long: {len(prompt)} characters > max_chars {config.max_chars}", record), removed
        if config.drop_url_dependent and (url := url_dependency(prompt)):
            return Outcome.rejected(item, f"url_dependent: needs the content of {url[:200]}", record), removed
        if config.drop_image_dependent and (image := image_dependency(prompt)):
            return Outcome.rejected(item, f"image_dependent: refers to {image!r} which it does not contain", record), removed
        return Outcome.kept(item, record), removed
