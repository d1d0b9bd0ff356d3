"""Importing this module registers every stage type (one import per stage module)."""

from distillery.ingest import stage as _ingest  # noqa: F401
from distillery.train import pack_stage as _pack  # noqa: F401
from distillery.prepare import stages as _prepare  # noqa: F401
from distillery.filters import ngram as _ngram, perplexity as _perplexity, structure as _structure  # noqa: F401
from distillery.train import sft_stage as _sft  # noqa: F401
from distillery.evaluate import stage as _eval  # noqa: F401
from distillery.generate import stage as _generate  # noqa: F401
