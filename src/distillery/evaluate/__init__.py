"""The `eval` stage: students sampled on AIME 2024/2025, MATH-500 and LiveCodeBench and scored per sample.

Tables, paired differences and length plots over its samples are the report's (`distillery.analyze`)."""
