"""The one strict-config base: every typed config (recipes, stage configs, verifier settings, cluster profiles)
rejects unknown fields instead of silently ignoring a misspelt key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model whose unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")
