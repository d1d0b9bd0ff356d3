"""Verifiers: one score in [0, 1] for every category (math, code, instruction following, judge, reward)."""

from distillery.schema.responses import ParsedResponse, extract_final_answer, parse_response
from distillery.verify.config import VerifyConfig
from distillery.verify.registry import Verifier, build_verifier
from distillery.verify.verdict import Verdict

__all__ = ["ParsedResponse", "Verdict", "Verifier", "VerifyConfig", "build_verifier", "extract_final_answer", "parse_response"]
