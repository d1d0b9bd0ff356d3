"""Fixtures of this test area live in core_helpers.py, importable under a name no other area shares."""

from core_helpers import *
