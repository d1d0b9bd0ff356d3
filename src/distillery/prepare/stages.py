"""Importing this module registers the query-preparation stages."""

from distillery.prepare import clean as _clean  # noqa: F401
from distillery.prepare import dedup as _dedup  # noqa: F401
from distillery.prepare import decontaminate as _decontaminate  # noqa: F401
