"""Evaluation of students on AIME 2024/2025, MATH-500 and LiveCodeBench: the `eval` stage, scoring math and
results tables and length plots (the paper's Tables 1 and 2)."""
