"""Importing this module registers every stage type (one import per stage module)."""

from distillery.ingest import stage as _ingest  # noqa: F401
from distillery.train import pack_stage as _pack  # noqa: F401
from distillery.train import sft_stage as _sft  # noqa: F401
