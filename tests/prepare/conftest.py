"""Fixtures of this test area live in prepare_helpers.py, importable under a name no other area shares."""

from prepare_helpers import *
