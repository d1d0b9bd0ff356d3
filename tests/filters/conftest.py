"""Fixtures of this test area live in filters_helpers.py, importable under a name no other area shares."""

from filters_helpers import *
