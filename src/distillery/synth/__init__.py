"""Paper-shaped synthetic data for rehearsing a run on one machine (`distillery synth`).

`tasks` writes queries in the paper's six categories, each with what a real verifier needs (a math answer, code
tests, IFEval constraints, a multiple-choice letter); `teachers` answers them as a deterministic model of each
paper teacher would (its length distribution, layout, failure and degeneration rates). The `synthetic` chat
backend (`distillery.llm.synthetic`) serves those answers to `generate`, so every stage after it runs on real
verdicts of answers shaped like the paper's, with no model.
"""
